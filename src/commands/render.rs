//! Renderings that more than one command prints (so that no command reaches into another).

use crate::output;
use crate::tenants::Tenant;

/// A table of tenants with one count column per tenant table.
pub fn tenants_table(list: &[Tenant]) -> comfy_table::Table {
    let tables: Vec<String> = list
        .first()
        .map(|t| t.rows.keys().cloned().collect())
        .unwrap_or_default();
    let mut header = vec!["slug", "name", "id"];
    header.extend(tables.iter().map(String::as_str));
    // On Citus: the node that holds each tenant.
    let nodes = list.iter().any(|t| t.node.is_some());
    if nodes {
        header.push("node");
    }
    let mut t = output::table(&header);
    for tenant in list {
        let mut row = vec![
            tenant.slug.clone(),
            tenant.name.clone(),
            tenant.id.to_string(),
        ];
        row.extend(
            tables
                .iter()
                .map(|k| tenant.rows.get(k).copied().unwrap_or(0).to_string()),
        );
        if nodes {
            row.push(tenant.node.clone().unwrap_or_default());
        }
        t.add_row(row);
    }
    t
}
