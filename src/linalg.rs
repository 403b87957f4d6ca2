//! Small helpers over index ranges and dense tensors that several engine modules share.

/// `(start, len)` of consecutive batches of at most `size` that cover `0..n`.
pub fn batch_ranges(n: i64, size: i64) -> impl Iterator<Item = (i64, i64)> {
    let size = size.max(1);
    (0..n.max(0))
        .step_by(size as usize)
        .map(move |start| (start, size.min(n - start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ranges_cover_every_index_once_in_order() {
        for (n, size) in [(0, 3), (1, 3), (7, 3), (9, 3), (5, 100), (4, 0)] {
            let mut seen = Vec::new();
            for (start, len) in batch_ranges(n, size) {
                assert!(
                    len >= 1 && len <= size.max(1),
                    "n {n} size {size}: len {len}"
                );
                seen.extend(start..start + len);
            }
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n {n} size {size}");
        }
    }
}
