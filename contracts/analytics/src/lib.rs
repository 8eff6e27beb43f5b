//! Confidential analytics: participants submit private data points into named groups; the
//! owner and the analysts it grants may read aggregates, and only of groups with at least
//! `min_group` participants. Nobody, the owner included, can read another participant's value.
//!
//! - init: `min_group <k>` (k >= 2; empty input: 3). The deployer owns the contract.
//! - command `submit <group> <value>`: the caller's data point (u64) in a group (1-32 of
//!   `a-z0-9_-`); submitting again replaces it.
//! - command `grant <pha1-address>` / `revoke <pha1-address>`: owner only.
//! - query `aggregate <group>`: `group=<g> count=<n> sum=<s> mean=<m> min=<a> max=<b>`.
//! - query `mine <group>`: `value=<v>`, the caller's own point.

use phala_contract_sdk::{address, env, phala_contract, storage, Address, Contract};

const CONFIG: &[u8] = b"config";
const MAX_GROUP_LEN: usize = 32;

pub struct Analytics;

phala_contract!(Analytics);

fn analyst_key(who: &Address) -> Vec<u8> {
    [b"analyst/".as_slice(), who].concat()
}

fn group_key(group: &str) -> Vec<u8> {
    [b"group/".as_slice(), group.as_bytes()].concat()
}

/// (min_group, owner)
fn config() -> Result<(u64, Address), String> {
    storage::get_value::<(u64, Address)>(CONFIG)?.ok_or_else(|| "not initialized".to_string())
}

fn points(group: &str) -> Result<Vec<(Address, u64)>, String> {
    Ok(storage::get_value(&group_key(group))?.unwrap_or_default())
}

fn check_group(group: &str) -> Result<(), String> {
    let valid = !group.is_empty()
        && group.len() <= MAX_GROUP_LEN
        && group
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "group names are 1-{} characters of a-z, 0-9, _ and -",
            MAX_GROUP_LEN
        ))
    }
}

fn words(input: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(input).map_err(|_| "the input is not UTF-8 text".to_string())?;
    Ok(text.split_whitespace().collect())
}

fn is_analyst(who: &Address) -> Result<bool, String> {
    let (_, owner) = config()?;
    Ok(*who == owner || storage::get(&analyst_key(who)).is_some())
}

impl Contract for Analytics {
    fn init(input: &[u8]) -> Result<(), String> {
        let min_group = match words(input)?.as_slice() {
            [] => 3,
            ["min_group", k] => k
                .parse::<u64>()
                .map_err(|_| format!("`{}` is not a number", k))?,
            _ => return Err("init input is `min_group <k>`".into()),
        };
        if min_group < 2 {
            return Err("min_group must be at least 2".into());
        }
        storage::set_value(CONFIG, &(min_group, env::caller()));
        Ok(())
    }

    fn command(input: &[u8]) -> Result<(), String> {
        let caller = env::caller();
        match words(input)?.as_slice() {
            ["submit", group, value] => {
                check_group(group)?;
                let value: u64 = value
                    .parse()
                    .map_err(|_| format!("`{}` is not a whole number", value))?;
                let mut points = points(group)?;
                match points.iter_mut().find(|(who, _)| *who == caller) {
                    Some(point) => point.1 = value,
                    None => points.push((caller, value)),
                }
                storage::set_value(&group_key(group), &points);
                env::emit_event(format!("submitted {} count={}", group, points.len()).as_bytes());
                Ok(())
            }
            [verb @ ("grant" | "revoke"), who] => {
                let (_, owner) = config()?;
                if caller != owner {
                    return Err("only the owner can grant or revoke analysts".into());
                }
                let who = address::parse(who)?;
                if *verb == "grant" {
                    storage::set(&analyst_key(&who), &[1]);
                } else {
                    storage::remove(&analyst_key(&who));
                }
                Ok(())
            }
            _ => Err("commands: `submit <group> <value>`, `grant <address>`, `revoke <address>`".into()),
        }
    }

    fn query(input: &[u8]) -> Result<Vec<u8>, String> {
        let caller = env::caller();
        match words(input)?.as_slice() {
            ["aggregate", group] => {
                check_group(group)?;
                if !is_analyst(&caller)? {
                    return Err("not authorized to query aggregates".into());
                }
                let (min_group, _) = config()?;
                let points = points(group)?;
                if (points.len() as u64) < min_group {
                    return Err(format!(
                        "group {} has fewer than {} participants",
                        group, min_group
                    ));
                }
                let values: Vec<u64> = points.iter().map(|(_, v)| *v).collect();
                let sum: u128 = values.iter().map(|v| u128::from(*v)).sum();
                let count = values.len() as u128;
                let min = values.iter().min().copied().unwrap_or(0);
                let max = values.iter().max().copied().unwrap_or(0);
                Ok(format!(
                    "group={} count={} sum={} mean={} min={} max={}",
                    group,
                    count,
                    sum,
                    sum / count,
                    min,
                    max
                )
                .into_bytes())
            }
            ["mine", group] => {
                check_group(group)?;
                points(group)?
                    .iter()
                    .find(|(who, _)| *who == caller)
                    .map(|(_, v)| format!("value={}", v).into_bytes())
                    .ok_or_else(|| format!("you have no data point in group {}", group))
            }
            _ => Err("queries: `aggregate <group>`, `mine <group>`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_contract_sdk::testing::{account, call_command, call_init, call_query, reset, with_env};

    fn setup() -> Address {
        reset();
        let owner = account(1);
        call_init::<Analytics>(owner, "min_group 3").unwrap();
        owner
    }

    #[test]
    fn aggregates_need_an_analyst_and_a_large_enough_group() {
        let owner = setup();
        for (n, value) in [(2, 10), (3, 20)] {
            call_command::<Analytics>(account(n), &format!("submit pay {}", value)).unwrap();
        }
        assert_eq!(
            call_query::<Analytics>(owner, "aggregate pay"),
            Err("group pay has fewer than 3 participants".into())
        );
        call_command::<Analytics>(account(4), "submit pay 60").unwrap();
        // Resubmission replaces.
        call_command::<Analytics>(account(2), "submit pay 40").unwrap();
        assert_eq!(
            call_query::<Analytics>(owner, "aggregate pay"),
            Ok("group=pay count=3 sum=120 mean=40 min=20 max=60".into())
        );
        assert_eq!(
            call_query::<Analytics>(account(2), "aggregate pay"),
            Err("not authorized to query aggregates".into())
        );
        assert_eq!(call_query::<Analytics>(account(2), "mine pay"), Ok("value=40".into()));
        assert!(call_query::<Analytics>(account(9), "mine pay").is_err());
        // Events carry counts, never values.
        let events = with_env(|env| env.events.clone());
        assert_eq!(events.last().unwrap(), b"submitted pay count=3");
    }

    #[test]
    fn only_the_owner_grants_analysts() {
        let owner = setup();
        let analyst = address::format(&account(5));
        assert!(call_command::<Analytics>(account(2), &format!("grant {}", analyst)).is_err());
        call_command::<Analytics>(owner, &format!("grant {}", analyst)).unwrap();
        for n in 2..5 {
            call_command::<Analytics>(account(n), "submit x 1").unwrap();
        }
        assert!(call_query::<Analytics>(account(5), "aggregate x").is_ok());
        call_command::<Analytics>(owner, &format!("revoke {}", analyst)).unwrap();
        assert!(call_query::<Analytics>(account(5), "aggregate x").is_err());
        assert!(call_command::<Analytics>(owner, "grant pha1notanaddress").is_err());
    }

    #[test]
    fn bad_inputs_are_refused_and_change_nothing() {
        setup();
        let before = with_env(|env| env.storage.clone());
        for input in ["submit", "submit pay x", "submit PAY 1", "submit pay -1", "launch"] {
            assert!(call_command::<Analytics>(account(2), input).is_err(), "{}", input);
        }
        assert_eq!(with_env(|env| env.storage.clone()), before);
        reset();
        assert!(call_init::<Analytics>(account(1), "min_group 1").is_err());
        assert!(call_init::<Analytics>(account(1), "nonsense").is_err());
    }
}
