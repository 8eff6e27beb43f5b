//! A benchmark contract: runs the compute kernels of `kernels.rs` inside the VM.
//!
//! - init: empty.
//! - command `matmul <n>` / `mix <len> <rounds>`: runs the kernel and stores its result under
//!   `result` (a command's work is what gas pays for).
//! - query `matmul <n>` / `mix <len> <rounds>`: answers the result as decimal text;
//!   `result`: the last command's result.

pub mod kernels;

use phala_contract_sdk::{phala_contract, storage, Contract};

pub struct Kernel;

phala_contract!(Kernel);

/// Largest matrix side and buffer accepted, so one call stays within the VM's memory.
const MAX_N: usize = 512;
const MAX_LEN: usize = 1 << 20;

fn run(input: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(input).map_err(|_| "the input is not UTF-8 text".to_string())?;
    let number = |word: &str| -> Result<usize, String> {
        word.parse()
            .map_err(|_| format!("`{}` is not a whole number", word))
    };
    match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["matmul", n] => {
            let n = number(n)?;
            if n == 0 || n > MAX_N {
                return Err(format!("n must be 1..={}", MAX_N));
            }
            Ok(u64::from(kernels::matmul(n)))
        }
        ["mix", len, rounds] => {
            let len = number(len)?;
            if len > MAX_LEN {
                return Err(format!("len must be at most {}", MAX_LEN));
            }
            let rounds = u32::try_from(number(rounds)?).map_err(|_| "too many rounds")?;
            Ok(kernels::mix(len, rounds))
        }
        _ => Err("`matmul <n>` or `mix <len> <rounds>`".into()),
    }
}

impl Contract for Kernel {
    fn init(_input: &[u8]) -> Result<(), String> {
        Ok(())
    }

    fn command(input: &[u8]) -> Result<(), String> {
        storage::set_value(b"result", &run(input)?);
        Ok(())
    }

    fn query(input: &[u8]) -> Result<Vec<u8>, String> {
        if input == b"result" {
            let result: Option<u64> = storage::get_value(b"result")?;
            return Ok(result.unwrap_or(0).to_string().into_bytes());
        }
        Ok(run(input)?.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use phala_contract_sdk::testing::{self, account};

    #[test]
    fn a_command_stores_what_the_query_computes() {
        testing::reset();
        let me = account(1);
        testing::call_init::<Kernel>(me, "").unwrap();
        let answer = testing::call_query::<Kernel>(me, "matmul 8").unwrap();
        testing::call_command::<Kernel>(me, "matmul 8").unwrap();
        assert_eq!(testing::call_query::<Kernel>(me, "result").unwrap(), answer);
        assert_eq!(answer, kernels::matmul(8).to_string());
        assert_ne!(kernels::matmul(8), kernels::matmul(9));
    }

    #[test]
    fn oversized_or_malformed_inputs_are_refused() {
        testing::reset();
        let me = account(1);
        assert!(testing::call_query::<Kernel>(me, "matmul 513").is_err());
        assert!(testing::call_query::<Kernel>(me, "matmul 0").is_err());
        assert!(testing::call_query::<Kernel>(me, "mix 2000000 1").is_err());
        assert!(testing::call_query::<Kernel>(me, "matmul x").is_err());
    }
}
