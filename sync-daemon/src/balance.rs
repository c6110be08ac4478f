//! Journal entries balance per currency, or are flagged.
//!
//! Lines of one entry can arrive on different pages and in different runs,
//! so the check is not made per batch: a trigger (migration 0006) lists every
//! entry whose lines changed in `journal_entry_unchecked`, and a run that has
//! loaded every page it fetched checks the listed entries of its connection.
//! An entry whose live lines do not sum to zero in each transaction currency
//! and in each company-code currency keeps the non-zero sums in `imbalance`
//! (`{"transaction": {"USD": "0.01"}, "company": {...}}`); one that balances
//! has `imbalance` null. `status` counts the unbalanced ones.

use sqlx::PgPool;

/// What one check found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Checked {
    pub entries: u64,
    pub unbalanced: u64,
}

/// Checks the listed entries of `connection` and takes them off the list, in
/// one transaction.
pub async fn check_entries(pool: &PgPool, connection: &str) -> anyhow::Result<Checked> {
    let rows: Vec<(bool,)> = sqlx::query_as(
        "with ids as (
             delete from journal_entry_unchecked u
             using source_link s
             where s.entity_type = 'journal_entry' and s.connection = $1
               and s.canonical_id = u.entry_id
             returning u.entry_id
         ),
         sums as (
             select l.entry_id, 'transaction' as basis, l.currency as cur, sum(l.amount) as total
             from journal_line l join ids on ids.entry_id = l.entry_id
             where l.deleted_at is null and l.amount is not null
             group by 1, 2, 3
             union all
             select l.entry_id, 'company', l.company_currency, sum(l.amount_company)
             from journal_line l join ids on ids.entry_id = l.entry_id
             where l.deleted_at is null and l.amount_company is not null
             group by 1, 2, 3
         ),
         per_basis as (
             select entry_id, basis,
                    jsonb_object_agg(coalesce(cur, '???'), trim_scale(total)::text) as off
             from sums where total <> 0
             group by 1, 2
         ),
         bad as (
             select entry_id, jsonb_object_agg(basis, off) as imbalance
             from per_basis group by 1
         )
         update journal_entry e
         set balance_checked_at = now(), imbalance = bad.imbalance
         from ids left join bad on bad.entry_id = ids.entry_id
         where e.id = ids.entry_id
         returning bad.imbalance is not null",
    )
    .bind(connection)
    .fetch_all(pool)
    .await?;
    Ok(Checked {
        entries: rows.len() as u64,
        unbalanced: rows.iter().filter(|r| r.0).count() as u64,
    })
}
