use super::*;

#[test]
fn irq_affinity_pairs() {
    let (p, w) = parse("irq_affinity=78:1,0x4f:2");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.irq_affinity, [(78, 1), (79, 2)]);
    for bad in ["irq_affinity=27:1", "irq_affinity=78:8", "irq_affinity=78", "irq_affinity=78:1,"] {
        let (p, w) = parse(bad);
        assert_eq!(w.len(), 1, "{bad}");
        assert!(p.irq_affinity.is_empty());
    }
}

#[test]
fn irq_spurious_window() {
    use crate::irq::spurious::SpuriousConfig;
    assert_eq!(parse("").0.irq_spurious, SpuriousConfig::DEFAULT);
    let (p, w) = parse("irq_spurious=100000,99900");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.irq_spurious, SpuriousConfig::LINUX);
    assert_eq!(parse("noirqdebug").0.irq_spurious, SpuriousConfig::OFF);
    for bad in ["irq_spurious=1000", "irq_spurious=1000,1000", "irq_spurious=1,0", "irq_spurious=x,1", "irq_spurious"] {
        let (p, w) = parse(bad);
        assert_eq!(w.len(), 1, "{bad}");
        assert_eq!(p.irq_spurious, SpuriousConfig::DEFAULT, "{bad}");
    }
}

#[test]
fn test_filters_accumulate() {
    let (p, w) = parse("ktest=burst ktest=pool ktest_skip=debug");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.ktest_filters, ["burst", "pool"]);
    assert_eq!(p.ktest_skips, ["debug"]);
    assert_eq!(parse("ktest=").1.len(), 1);
    assert!(p.ktest_selects("burst_from_irq_context"));
    assert!(p.ktest_selects("per_device_pool_from_inflight_hint"));
    assert!(!p.ktest_selects("restricted_isolation"));
    assert!(!p.ktest_selects("burst_debug"));
    assert!(KernelParams::default().ktest_selects("anything"));
}

#[test]
fn linux_swiotlb_forms() {
    let (p, w) = parse("swiotlb=16384,4,force");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.swiotlb, SwiotlbArg { slots: Some(16384), areas: Some(4), force: Some(true) });
    assert_eq!(parse("swiotlb=noforce").0.swiotlb, SwiotlbArg { slots: None, areas: None, force: Some(false) });
    assert_eq!(parse("swiotlb=2048").0.swiotlb.slots, Some(2048));
}

#[test]
fn ours_and_defaults() {
    let (p, w) = parse("  swiotlb_policy=static dma_debug=on loglevel=debug demo=read-verify swiotlb_reserve=0x80 blk_inflight_kib=0 ");
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(p.swiotlb_policy, SwiotlbPolicy::Static);
    assert!(p.dma_debug);
    assert_eq!(p.loglevel, log::LevelFilter::Debug);
    assert_eq!(p.demo.as_deref(), Some("read-verify"));
    assert_eq!(p.blk_inflight_kib, 0);
    assert_eq!(p.swiotlb_reserve, 0x80);
    assert_eq!(parse("").0, KernelParams::default());
}

#[test]
fn garbage_warns_and_keeps_defaults() {
    let (p, w) = parse("swiotlb_policy=fast swiotlb=12,3 dma_debug bogus swiotlb_low_wm=500 swiotlb=x,force \u{1F600}=1");
    assert_eq!(p, KernelParams::default());
    let words: Vec<&str> = w.iter().map(|w| w.word.as_str()).collect();
    assert_eq!(
        words,
        ["swiotlb_policy=fast", "swiotlb=12,3", "dma_debug", "bogus", "swiotlb_low_wm=500", "swiotlb=x,force", "\u{1F600}=1"]
    );
    assert!(w[1].to_string().contains("power of two"));
}

#[test]
fn virtio_blk_features() {
    let d = KernelParams::default();
    assert!(!d.blk_indirect && !d.blk_event_idx, "the defaults the benchmark chose");
    let (p, w) = parse("blk_indirect=off blk_event_idx=on");
    assert!(w.is_empty(), "{w:?}");
    assert!(!p.blk_indirect && p.blk_event_idx);
    let (p, w) = parse("blk_indirect=0 blk_event_idx=1 blk_event_idx=off");
    assert!(w.is_empty() && !p.blk_indirect && !p.blk_event_idx);
    let (p, w) = parse("blk_indirect=off blk_indirect=on blk_event_idx=yes");
    assert!(w.is_empty() && p.blk_indirect && p.blk_event_idx);
    assert_eq!(d.blk_retries, 3);
    let (p, w) = parse("blk_retries=0");
    assert!(w.is_empty() && p.blk_retries == 0);
    let (p, w) = parse("blk_retries=17 blk_retries");
    assert_eq!((p.blk_retries, w.len()), (3, 2), "out of range and valueless keep the default");
    let (p, w) = parse("blk_indirect=maybe blk_event_idx blk_indirect=");
    assert_eq!((p.blk_indirect, p.blk_event_idx), (d.blk_indirect, d.blk_event_idx));
    let why: Vec<&str> = w.iter().map(|w| w.why).collect();
    assert_eq!(why, ["expected on or off", "needs a value (key=value)", "expected on or off"]);
}

#[test]
fn cma_sizes_as_linux_memparse_reads_them() {
    assert_eq!(parse("cma=64M").0.cma, Some(64 << 20));
    assert_eq!(parse("cma=0x400000 cma=2g").0.cma, Some(2 << 30), "the last one wins");
    assert_eq!(parse("cma=0").0.cma, Some(0));
    assert_eq!(early_cma("loglevel=info cma=32M demo=x"), Some(Ok(32 << 20)));
    assert_eq!(early_cma("cma=16k cma=1M"), Some(Ok(1 << 20)));
    assert_eq!(early_cma("swiotlb=force"), None);
    for bad in ["cma=64X", "cma=M", "cma=64M@0x40000000-0x50000000", "cma=99999999999T", "cma"] {
        let (p, w) = parse(bad);
        assert_eq!((p.cma, w.len()), (None, 1), "{bad}");
    }
    assert!(early_cma("cma=64M@0x40000000").unwrap().unwrap_err().contains("not supported"));
}

#[test]
fn inverted_watermarks_fall_back() {
    let (p, w) = parse("swiotlb_low_wm=10 swiotlb_high_wm=50");
    assert_eq!(w.len(), 1);
    assert_eq!((p.swiotlb_low_wm, p.swiotlb_high_wm), (25, 10));
}

#[test]
fn clean_slots_default_on_and_can_be_turned_off() {
    assert!(parse("").0.swiotlb_clean_slots);
    let (p, w) = parse("swiotlb_clean_slots=off");
    assert!(w.is_empty() && !p.swiotlb_clean_slots);
    assert_eq!(parse("swiotlb_clean_slots=maybe").1.len(), 1);
}

#[test]
fn reclaim_scrub_default_off_and_can_be_turned_on() {
    let params = parse("").0;
    assert!(!params.swiotlb_reclaim_scrub);
    assert!(!crate::dma::swiotlb::mem::Tunables::from_params(&params).reclaim_scrub);
    let (p, w) = parse("swiotlb_reclaim_scrub=on");
    assert!(w.is_empty() && p.swiotlb_reclaim_scrub);
    assert!(crate::dma::swiotlb::mem::Tunables::from_params(&p).reclaim_scrub, "the tunable follows the bootarg");
    assert_eq!(parse("swiotlb_reclaim_scrub=always").1.len(), 1);
}

#[test]
fn colour_defaults_to_qemus_tlb_reach_and_takes_0_or_a_large_power_of_two() {
    assert_eq!(parse("").0.swiotlb_colour_kib, 1024);
    for (arg, kib) in [("0", 0), ("512", 512), ("4096", 4096)] {
        let (p, w) = parse(&format!("swiotlb_colour_kib={arg}"));
        assert!(w.is_empty(), "{arg}: {w:?}");
        assert_eq!(p.swiotlb_colour_kib, kib);
    }
    for bad in ["256", "1000", "x", "-1"] {
        let (p, w) = parse(&format!("swiotlb_colour_kib={bad}"));
        assert_eq!(w.len(), 1, "{bad} accepted");
        assert_eq!(p.swiotlb_colour_kib, 1024, "{bad} changed the default");
    }
}

#[test]
fn slot_cache_defaults_to_8_runs_and_takes_0_to_its_maximum() {
    let most = crate::dma::swiotlb::SLOT_CACHE_MAX;
    assert_eq!(parse("").0.swiotlb_slot_cache, 8);
    for n in [0, 2, most] {
        let (p, w) = parse(&format!("swiotlb_slot_cache={n}"));
        assert!(w.is_empty(), "{n}: {w:?}");
        assert_eq!(p.swiotlb_slot_cache, n);
    }
    for bad in [format!("{}", most + 1), "x".into(), "-1".into()] {
        let (p, w) = parse(&format!("swiotlb_slot_cache={bad}"));
        assert_eq!(w.len(), 1, "{bad} accepted");
        assert_eq!(p.swiotlb_slot_cache, 8, "{bad} changed the default");
    }
}
