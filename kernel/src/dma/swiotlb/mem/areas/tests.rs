use super::area_rank;

#[test]
fn areas_are_ranked_by_bit_reversal() {
    let order = |n| {
        let mut areas: alloc::vec::Vec<usize> = (0..n).collect();
        areas.sort_by_key(|a| area_rank(*a, n));
        areas
    };
    assert_eq!(order(1), [0]);
    assert_eq!(order(2), [0, 1]);
    assert_eq!(order(4), [0, 2, 1, 3]);
    assert_eq!(order(8), [0, 4, 2, 6, 1, 5, 3, 7]);
}
