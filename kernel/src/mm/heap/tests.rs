use super::*;
use std::sync::Mutex;

/// A page source backed by leaked host memory, counting its calls.
struct LeakSource {
    calls: Mutex<usize>,
    limit: usize,
}

impl HeapSource for LeakSource {
    fn grow(&self, min_bytes: usize) -> Option<(usize, usize)> {
        let mut calls = self.calls.lock().unwrap();
        if *calls == self.limit {
            return None;
        }
        *calls += 1;
        let mem: &'static mut [u64] = Vec::leak(vec![0u64; min_bytes / 8 + 1]);
        Some((mem.as_mut_ptr() as usize, min_bytes))
    }
}

fn heap_with_arena(bytes: usize) -> &'static KernelHeap {
    let heap: &'static KernelHeap = Box::leak(Box::new(KernelHeap::new()));
    let mem: &'static mut [u64] = Vec::leak(vec![0u64; bytes / 8]);
    // SAFETY: leaked host memory, used by nothing else.
    assert!(unsafe { heap.add_arena(mem.as_mut_ptr() as usize, bytes) });
    heap
}

#[test]
fn grows_from_the_source_when_full_and_frees_into_the_right_arena() {
    let heap = heap_with_arena(64 * 1024);
    let source: &'static LeakSource = Box::leak(Box::new(LeakSource { calls: Mutex::new(0), limit: 4 }));
    heap.set_source(source);
    let big = Layout::from_size_align(512 * 1024, 16).unwrap();
    let p = heap.allocate(big).expect("the heap grows to satisfy an allocation bigger than its arena");
    assert_eq!(*source.calls.lock().unwrap(), 1);
    assert_eq!(heap.stats().arenas, 2);
    let used = heap.stats().used;
    // SAFETY: allocated above with this layout.
    unsafe { heap.deallocate(p, big) };
    assert_eq!(heap.stats().used, used - big.size());
}

#[test]
fn fails_cleanly_without_a_source_and_never_grows_in_irq_context() {
    let heap = heap_with_arena(64 * 1024);
    assert_eq!(heap.last_failure(), None);
    assert!(heap.allocate(Layout::from_size_align(128 * 1024, 8).unwrap()).is_none());
    // What the out-of-memory report prints: the request and the heap then.
    let f = heap.last_failure().expect("the failure is recorded");
    assert_eq!((f.size, f.align, f.heap), (128 * 1024, 8, heap.stats()));
    assert_eq!(f.heap.arenas, 1);
    let source: &'static LeakSource = Box::leak(Box::new(LeakSource { calls: Mutex::new(0), limit: 4 }));
    heap.set_source(source);
    let _irq = crate::arch::host::IrqContextGuard::enter();
    assert!(heap.allocate(Layout::from_size_align(128 * 1024, 8).unwrap()).is_none());
    assert_eq!(*source.calls.lock().unwrap(), 0);
}

#[test]
fn arenas_are_bounded() {
    let heap = KernelHeap::new();
    let mem: &'static mut [u64] = Vec::leak(vec![0u64; MAX_ARENAS * 1024]);
    for i in 0..MAX_ARENAS {
        // SAFETY: disjoint 8 KiB pieces of leaked memory.
        assert!(unsafe { heap.add_arena(mem.as_mut_ptr() as usize + i * 8192, 8192) });
    }
    // SAFETY: as above (not used: the heap is full of arenas).
    assert!(!unsafe { heap.add_arena(mem.as_mut_ptr() as usize, 8192) });
}
