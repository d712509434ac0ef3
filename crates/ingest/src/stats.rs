//! Statistics of ingested prompts for the manifest (`show`): rows per split
//! and dataset, and the distribution of prompts per user, computed with
//! polars' lazy group-bys.

use std::collections::BTreeMap;

use anyhow::Result;
use lineage::tables::PromptRow;
use polars::prelude::*;
use serde_json::{Value, json};

/// `{rows_per_split, rows_per_dataset, prompts_per_user}` of a prompts table.
pub fn prompt_stats(rows: &[PromptRow]) -> Result<Value> {
    let df = df!(
        "user_id" => rows.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>(),
        "split" => rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(),
        "dataset" => rows.iter().map(|r| r.dataset.as_str()).collect::<Vec<_>>(),
    )?;
    Ok(json!({
        "rows_per_split": counts_by(&df, "split")?,
        "rows_per_dataset": counts_by(&df, "dataset")?,
        "prompts_per_user": per_user(&df)?,
    }))
}

/// Rows per value of `column`.
pub fn counts_by(df: &DataFrame, column: &str) -> Result<BTreeMap<String, u64>> {
    let counts = df.clone().lazy().group_by([col(column)]).agg([len().alias("n")]).collect()?;
    let keys = counts.column(column)?.str()?.clone();
    let n = counts.column("n")?.cast(&DataType::UInt64)?;
    let n = n.u64()?;
    Ok(keys.iter().zip(n.iter()).filter_map(|(k, n)| Some((k?.to_string(), n?))).collect())
}

/// Users and the min, median, mean, 90th percentile and max of their prompt counts.
fn per_user(df: &DataFrame) -> Result<Value> {
    if df.height() == 0 {
        return Ok(json!({ "users": 0 }));
    }
    let p = || col("prompts");
    let summary = df
        .clone()
        .lazy()
        .group_by([col("user_id")])
        .agg([len().alias("prompts")])
        .select([
            len().alias("users"),
            p().min().alias("min"),
            p().median().alias("median"),
            p().mean().alias("mean"),
            p().quantile(lit(0.9), QuantileMethod::Nearest).alias("p90"),
            p().max().alias("max"),
        ])
        .collect()?;
    let mut out = serde_json::Map::new();
    for name in ["users", "min", "median", "mean", "p90", "max"] {
        let v = summary.column(name)?.cast(&DataType::Float64)?;
        let v = v.f64()?.get(0).unwrap_or(0.0);
        out.insert(name.to_string(), json!(v));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, split: &str) -> PromptRow {
        PromptRow {
            prompt_id: format!("p-{user}-{split}"),
            text: "t".into(),
            user_id: user.into(),
            split: split.into(),
            dataset: "ppo".into(),
            family: String::new(),
            meta: "{}".into(),
            source: "f".into(),
        }
    }

    #[test]
    fn per_user_distribution() {
        let rows = vec![row("a", "train"), row("a", "train"), row("a", "train"), row("b", "test")];
        let s = prompt_stats(&rows).unwrap();
        assert_eq!(s["rows_per_split"]["train"], 3);
        assert_eq!(s["rows_per_dataset"]["ppo"], 4);
        assert_eq!(s["prompts_per_user"]["users"], 2.0);
        assert_eq!(s["prompts_per_user"]["max"], 3.0);
        assert_eq!(s["prompts_per_user"]["mean"], 2.0);
    }
}
