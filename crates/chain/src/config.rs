//! Chain parameters fixed at genesis.

use crate::{
    balances::{Allocation, FeeSchedule},
    registry::RegistryConfig,
};
use phala_types::{Address, Balance, TOTAL_SUPPLY};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The state-machine part of a chain spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisConfig {
    /// Milliseconds since the Unix epoch; the genesis block's timestamp.
    pub timestamp: u64,
    pub fees: FeeSchedule,
    /// Initial balances; they must sum to exactly the total supply.
    pub allocations: Vec<Allocation>,
    /// Origins allowed to send upward messages from the start.
    pub upward_origins: Vec<Address>,
    /// A development chain: the only kind that accepts simulated TEEs.
    #[serde(default)]
    pub dev: bool,
    #[serde(default)]
    pub registry: RegistryConfig,
    #[serde(default)]
    pub contracts: crate::contracts::ContractsConfig,
}

/// Why a genesis configuration is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum GenesisError {
    #[error("allocations sum to {0}, they must sum to the total supply {TOTAL_SUPPLY}")]
    Supply(Balance),
    #[error("fee split sums to {0}%, it must sum to 100%")]
    FeeSplit(u32),
    #[error("account {0} is allocated twice")]
    DuplicateAllocation(Address),
    #[error("a production (non-dev) chain must not accept simulated TEEs")]
    SimulatedOnProduction,
    #[error("attestation policy: {0}")]
    Policy(phala_types::registry::PolicyError),
    #[error("the treasury {0} is a public key: someone could hold its private key")]
    TreasuryWithKey(Address),
    #[error("{role} {address} is the dev account `{name}`, whose key anyone can compute")]
    DevKey {
        role: &'static str,
        address: Address,
        name: String,
    },
}

impl GenesisConfig {
    /// Checks the invariants every chain starts from.
    pub fn validate(&self) -> Result<(), GenesisError> {
        let split = &self.fees.split;
        let parts = split.burn as u32 + split.author as u32 + split.treasury as u32;
        if parts != 100 {
            return Err(GenesisError::FeeSplit(parts));
        }
        let mut seen = std::collections::BTreeSet::new();
        let mut total: Balance = 0;
        for allocation in &self.allocations {
            if !seen.insert(allocation.address) {
                return Err(GenesisError::DuplicateAllocation(allocation.address));
            }
            total = total.saturating_add(allocation.balance);
        }
        if total != TOTAL_SUPPLY {
            return Err(GenesisError::Supply(total));
        }
        if phala_crypto::public_key(&self.fees.treasury).is_ok() {
            return Err(GenesisError::TreasuryWithKey(self.fees.treasury));
        }
        if !self.dev {
            self.refuse_dev_keys()?;
        }
        if !self.dev && self.registry.policy.allow_simulated {
            return Err(GenesisError::SimulatedOnProduction);
        }
        self.registry
            .policy
            .validate()
            .map_err(GenesisError::Policy)?;
        Ok(())
    }
}

impl GenesisConfig {
    /// A production chain must not give a balance, origin or admin rights to a dev key.
    fn refuse_dev_keys(&self) -> Result<(), GenesisError> {
        let named = self
            .allocations
            .iter()
            .map(|a| ("allocation", a.address))
            .chain(self.upward_origins.iter().map(|o| ("upward origin", *o)))
            .chain(self.registry.admin.map(|a| ("admin", a)));
        for (role, address) in named {
            if let Some(name) = phala_crypto::dev::dev_name(&address) {
                return Err(GenesisError::DevKey {
                    role,
                    address,
                    name,
                });
            }
        }
        Ok(())
    }
}
