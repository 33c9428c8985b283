use super::*;
use std::sync::atomic::AtomicUsize;

static A: AtomicUsize = AtomicUsize::new(0);
static B: AtomicUsize = AtomicUsize::new(0);

#[test]
fn scheduled_work_runs_once_in_task_context() {
    let wq = WorkQueue::new();
    let a = wq
        .register("a", || {
            A.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    let _b = wq
        .register("b", || {
            B.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    {
        let _irq = crate::arch::host::IrqContextGuard::enter();
        wq.schedule(a);
        wq.schedule(a);
    }
    assert!(wq.has_pending());
    assert_eq!(wq.run_pending(), 1);
    assert_eq!(A.load(Ordering::SeqCst), 1);
    assert_eq!(B.load(Ordering::SeqCst), 0);
    assert_eq!(wq.run_pending(), 0);
}

#[test]
#[should_panic(expected = "task context")]
fn running_work_in_irq_context_is_caught() {
    let wq = WorkQueue::new();
    let _irq = crate::arch::host::IrqContextGuard::enter();
    wq.run_pending();
}

#[test]
fn an_item_never_runs_on_two_cpus_at_once() {
    static WQ: WorkQueue = WorkQueue::new();
    static INSIDE: AtomicUsize = AtomicUsize::new(0);
    static OVERLAPS: AtomicUsize = AtomicUsize::new(0);
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let id = WQ
        .register("slow", || {
            if INSIDE.fetch_add(1, Ordering::SeqCst) != 0 {
                OVERLAPS.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(std::time::Duration::from_micros(50));
            RUNS.fetch_add(1, Ordering::SeqCst);
            INSIDE.fetch_sub(1, Ordering::SeqCst);
        })
        .unwrap();
    let threads: std::vec::Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                for _ in 0..200 {
                    WQ.schedule(id);
                    WQ.run_pending();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    while WQ.has_pending() {
        WQ.run_pending();
    }
    assert_eq!(OVERLAPS.load(Ordering::SeqCst), 0, "the item ran on two threads at once");
    assert!(RUNS.load(Ordering::SeqCst) > 0);
}

#[test]
fn register_is_bounded() {
    let wq = WorkQueue::new();
    for _ in 0..MAX_WORK {
        wq.register("x", || {}).unwrap();
    }
    assert_eq!(wq.register("x", || {}), Err(WorkError::Full));
}
