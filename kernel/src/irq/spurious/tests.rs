use super::*;

const CFG: SpuriousConfig = SpuriousConfig::DEFAULT;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Feeds `n` interrupts, `unhandled_every`-th ones unhandled (1: all), 10 µs apart from
/// `start`; returns the first verdict that disabled the line and when.
fn feed(s: &mut SpuriousStats, n: u32, unhandled: impl Fn(u32) -> bool, start: Duration, step: Duration) -> Option<(u32, Verdict)> {
    let mut found = None;
    for i in 0..n {
        let ret = if unhandled(i) { IrqReturn::None } else { IrqReturn::Handled };
        let v = s.note_interrupt(ret, start + step * i, CFG);
        if v != Verdict::Keep && found.is_none() {
            found = Some((i, v));
        }
    }
    found
}

#[test]
fn a_storm_of_unhandled_interrupts_disables_the_line_after_one_window() {
    let mut s = SpuriousStats::default();
    let got = feed(&mut s, 5_000, |_| true, ms(0), Duration::from_micros(10));
    assert_eq!(got, Some((999, Verdict::NobodyCared { unhandled: 1_000, window: 1_000 })));
    assert!(s.spurious_disabled);
    assert_eq!((s.total, s.total_unhandled), (5_000, 5_000), "counted after too, reported once");
}

#[test]
fn handled_interrupts_never_disable() {
    let mut s = SpuriousStats::default();
    assert_eq!(feed(&mut s, 10_000, |_| false, ms(0), Duration::from_micros(10)), None);
    assert_eq!((s.total, s.total_unhandled, s.spurious_disabled), (10_000, 0, false));
}

#[test]
fn the_share_is_strict() {
    // 10 handled in each window of 1,000: 990 unhandled is not more than 990.
    let mut s = SpuriousStats::default();
    assert_eq!(feed(&mut s, 3_000, |i| i % 100 != 0, ms(0), Duration::from_micros(10)), None);
    // 9 handled: 991 unhandled disables at the end of the first window.
    let mut s = SpuriousStats::default();
    let got = feed(&mut s, 3_000, |i| i % 1000 >= 9, ms(0), Duration::from_micros(10));
    assert_eq!(got, Some((999, Verdict::NobodyCared { unhandled: 991, window: 1_000 })));
}

#[test]
fn rare_unhandled_interrupts_restart_the_count() {
    // All unhandled, but 101 ms apart: each restarts the count at 1 (Linux's HZ/10).
    let mut s = SpuriousStats::default();
    assert_eq!(feed(&mut s, 3_000, |_| true, ms(0), ms(101)), None);
    assert_eq!(s.total_unhandled, 3_000);
    // Exactly 100 ms apart is still "recent" (Linux: time_after, strictly later).
    let mut s = SpuriousStats::default();
    assert!(feed(&mut s, 1_000, |_| true, ms(0), ms(100)).is_some());
}

#[test]
fn a_pause_in_the_storm_starts_the_unhandled_count_again() {
    let mut s = SpuriousStats::default();
    // 600 unhandled, a 200 ms pause, 400 more: the window ends with 400 unhandled, kept.
    assert_eq!(feed(&mut s, 600, |_| true, ms(0), Duration::from_micros(10)), None);
    assert_eq!(feed(&mut s, 400, |_| true, ms(300), Duration::from_micros(10)), None);
    assert_eq!((s.irq_count, s.irqs_unhandled, s.spurious_disabled), (0, 0, false));
    // The next full window of unhandled ones disables it.
    assert!(feed(&mut s, 1_000, |_| true, ms(400), Duration::from_micros(10)).is_some());
}

#[test]
fn linux_numbers_and_off() {
    let mut s = SpuriousStats::default();
    let mut verdict = None;
    for i in 0..100_000u32 {
        let ret = if i < 99_901 { IrqReturn::None } else { IrqReturn::Handled };
        if let Verdict::NobodyCared { unhandled, window } =
            s.note_interrupt(ret, Duration::from_micros(u64::from(i)), SpuriousConfig::LINUX)
        {
            verdict = Some((i, unhandled, window));
        }
    }
    assert_eq!(verdict, Some((99_999, 99_901, 100_000)));
    let mut s = SpuriousStats::default();
    for i in 0..200_000u32 {
        assert_eq!(s.note_interrupt(IrqReturn::None, Duration::from_micros(u64::from(i)), SpuriousConfig::OFF), Verdict::Keep);
    }
}
