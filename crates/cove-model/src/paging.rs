//! Paging by index: a list answer's next page starts at an index Cove
//! handed out as the previous page's token. Each API words its tokens and
//! their errors its own way; the cut is the same everywhere.

/// The index a decimal `token` names when it is one within `len` items
/// (no token: the first page).
pub fn start_of(token: Option<&str>, len: usize) -> Option<usize> {
    match token {
        None => Some(0),
        Some(t) => t.parse::<usize>().ok().filter(|&i| i <= len),
    }
}

/// The items from `start`, at most `size` of them, and the index the next
/// page starts at when more remain.
pub fn cut<T>(items: Vec<T>, start: usize, size: usize) -> (Vec<T>, Option<usize>) {
    let total = items.len();
    let end = start.saturating_add(size).min(total);
    let page: Vec<T> = items
        .into_iter()
        .skip(start)
        .take(end.saturating_sub(start))
        .collect();
    (page, (end < total).then_some(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_follow_their_indexes() {
        let items: Vec<u32> = (0..5).collect();
        assert_eq!(cut(items.clone(), 0, 2), (vec![0, 1], Some(2)));
        assert_eq!(cut(items.clone(), 4, 2), (vec![4], None));
        assert_eq!(cut(items.clone(), 9, 2), (vec![], None));
        assert_eq!(cut(items, 1, 0), (vec![], Some(1)));
        assert_eq!(start_of(None, 0), Some(0));
        assert_eq!(start_of(Some("5"), 5), Some(5));
        assert_eq!(start_of(Some("6"), 5), None);
        assert_eq!(start_of(Some("x"), 5), None);
    }
}
