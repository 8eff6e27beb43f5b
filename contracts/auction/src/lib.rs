//! A sealed-bid (Vickrey) auction: bids stay secret; after the closing height anyone may close
//! it, and only the winner and the price (the second-highest bid) become public.
//!
//! - init: `<item words...> until <height>`.
//! - command `bid <amount>` (until the closing height; a new bid replaces the bidder's last).
//! - command `close` (after the closing height): emits `winner <pha1-address> price <amount>`.
//! - query `my_bid`, `result` (after close), `info`.

use phala_contract_sdk::{address, env, phala_contract, storage, Address, Contract};

const INFO: &[u8] = b"info";
const BIDS: &[u8] = b"bids";
const RESULT: &[u8] = b"result";

pub struct Auction;

phala_contract!(Auction);

/// (item, until)
fn info() -> Result<(String, u64), String> {
    storage::get_value(INFO)?.ok_or_else(|| "not initialized".to_string())
}

/// Bids in the order they were first placed: (bidder, amount).
fn bids() -> Result<Vec<(Address, u128)>, String> {
    Ok(storage::get_value(BIDS)?.unwrap_or_default())
}

/// (winner, price) once closed.
fn result() -> Result<Option<(Address, u128)>, String> {
    storage::get_value(RESULT)
}

fn words(input: &[u8]) -> Result<Vec<&str>, String> {
    let text = std::str::from_utf8(input).map_err(|_| "the input is not UTF-8 text".to_string())?;
    Ok(text.split_whitespace().collect())
}

impl Contract for Auction {
    fn init(input: &[u8]) -> Result<(), String> {
        let words = words(input)?;
        let usage = || "init input is `<item> until <height>`".to_string();
        if words.len() < 3 || words[words.len() - 2] != "until" {
            return Err(usage());
        }
        let until: u64 = words[words.len() - 1].parse().map_err(|_| usage())?;
        let item = words[..words.len() - 2].join(" ");
        storage::set_value(INFO, &(item, until));
        Ok(())
    }

    fn command(input: &[u8]) -> Result<(), String> {
        let (_, until) = info()?;
        let height = env::block_height();
        match words(input)?.as_slice() {
            ["bid", amount] => {
                if height > until {
                    return Err(format!("bidding closed at block {}", until));
                }
                let amount: u128 = amount
                    .parse()
                    .map_err(|_| format!("`{}` is not a whole number", amount))?;
                if amount == 0 {
                    return Err("a bid must be more than zero".into());
                }
                let caller = env::caller();
                let mut bids = bids()?;
                match bids.iter_mut().find(|(who, _)| *who == caller) {
                    Some(bid) => bid.1 = amount,
                    None => bids.push((caller, amount)),
                }
                storage::set_value(BIDS, &bids);
                Ok(())
            }
            ["close"] => {
                if height <= until {
                    return Err(format!("the auction is open until block {}", until));
                }
                if result()?.is_some() {
                    return Err("the auction is already closed".into());
                }
                let bids = bids()?;
                let mut best: Option<(Address, u128)> = None;
                let mut second = 0u128;
                for (who, amount) in &bids {
                    match best {
                        // Strictly higher wins: ties go to the earlier bidder.
                        Some((_, top)) if *amount <= top => second = second.max(*amount),
                        _ => {
                            second = best.map_or(second, |(_, top)| top.max(second));
                            best = Some((*who, *amount));
                        }
                    }
                }
                let (winner, top) = best.ok_or_else(|| "no bids were placed".to_string())?;
                let price = if bids.len() == 1 { top } else { second };
                storage::set_value(RESULT, &(winner, price));
                let event = format!("winner {} price {}", address::format(&winner), price);
                env::emit_event(event.as_bytes());
                Ok(())
            }
            _ => Err("commands: `bid <amount>`, `close`".into()),
        }
    }

    fn query(input: &[u8]) -> Result<Vec<u8>, String> {
        match words(input)?.as_slice() {
            ["my_bid"] => {
                let caller = env::caller();
                bids()?
                    .iter()
                    .find(|(who, _)| *who == caller)
                    .map(|(_, amount)| format!("bid={}", amount).into_bytes())
                    .ok_or_else(|| "you have not bid".to_string())
            }
            ["result"] => match result()? {
                Some((winner, price)) => {
                    Ok(format!("winner={} price={}", address::format(&winner), price).into_bytes())
                }
                None => Err("the auction is still open".into()),
            },
            ["info"] => {
                let (item, until) = info()?;
                let state = if result()?.is_some() { "closed" } else { "open" };
                Ok(format!(
                    "item={} until={} bids={} state={}",
                    item,
                    until,
                    bids()?.len(),
                    state
                )
                .into_bytes())
            }
            _ => Err("queries: `my_bid`, `result`, `info`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_contract_sdk::testing::{account, call_command, call_init, call_query, reset, set_block};

    fn setup() {
        reset();
        set_block(1, 0);
        call_init::<Auction>(account(1), "a painting until 10").unwrap();
    }

    #[test]
    fn the_highest_bidder_wins_at_the_second_price() {
        setup();
        call_command::<Auction>(account(2), "bid 100").unwrap();
        call_command::<Auction>(account(3), "bid 250").unwrap();
        call_command::<Auction>(account(4), "bid 180").unwrap();
        call_command::<Auction>(account(2), "bid 120").unwrap();
        assert_eq!(call_query::<Auction>(account(2), "my_bid"), Ok("bid=120".into()));
        assert_eq!(call_query::<Auction>(account(2), "result"), Err("the auction is still open".into()));
        assert!(call_command::<Auction>(account(5), "close").is_err());
        set_block(11, 0);
        assert!(call_command::<Auction>(account(5), "bid 999").is_err());
        call_command::<Auction>(account(5), "close").unwrap();
        let winner = address::format(&account(3));
        assert_eq!(
            call_query::<Auction>(account(9), "result"),
            Ok(format!("winner={} price=180", winner))
        );
        assert!(call_command::<Auction>(account(5), "close").is_err());
        assert_eq!(
            call_query::<Auction>(account(9), "info"),
            Ok("item=a painting until=10 bids=3 state=closed".into())
        );
    }

    #[test]
    fn ties_go_to_the_earliest_and_a_lone_bidder_pays_its_bid() {
        setup();
        call_command::<Auction>(account(2), "bid 50").unwrap();
        call_command::<Auction>(account(3), "bid 50").unwrap();
        set_block(11, 0);
        call_command::<Auction>(account(5), "close").unwrap();
        let first = address::format(&account(2));
        assert_eq!(call_query::<Auction>(account(9), "result"), Ok(format!("winner={} price=50", first)));
        setup();
        call_command::<Auction>(account(2), "bid 70").unwrap();
        set_block(11, 0);
        call_command::<Auction>(account(5), "close").unwrap();
        assert!(call_query::<Auction>(account(9), "result").unwrap().ends_with("price=70"));
        setup();
        set_block(11, 0);
        assert!(call_command::<Auction>(account(5), "close").is_err());
        assert!(call_command::<Auction>(account(2), "bid 0").is_err());
    }
}
