//! Pages of rows bounded by bytes as well as by count, for every backend.

/// Collects rows until their bytes pass `PAGE_BYTES_MAX`, the row that passes it included (the
/// service trims pages to the limit): a page request never loads 500 large rows to send
/// 768 KiB of them.
pub(crate) fn page_of<T, E>(
    rows: impl Iterator<Item = Result<T, E>>,
    size: impl Fn(&T) -> usize,
) -> Result<Vec<T>, E> {
    let (mut page, mut total) = (Vec::new(), 0usize);
    for row in rows {
        let row = row?;
        total = total.saturating_add(size(&row));
        page.push(row);
        if total > chapar_types::limits::PAGE_BYTES_MAX {
            break;
        }
    }
    Ok(page)
}
