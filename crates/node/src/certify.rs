//! Finality certificates without consensus: every validator's share signs a finalize vote for a
//! block, and the votes are assembled as simplex would. For tests and benchmarks that need a
//! certified chain (a pRuntime's light client checks these exactly like real ones).

use crate::spec::{ChainSpec, Scheme, ValidatorKey};
use anyhow::{Context, anyhow};
use commonware_codec::Encode;
use commonware_consensus::{
    simplex::types::{Finalization, Finalize, Proposal},
    types::{Epoch, Round, View},
};
use commonware_utils::iter::NonEmpty;
use phala_types::Digest;

/// Holds every validator's signing scheme for one chain.
pub struct Certifier {
    schemes: Vec<Scheme>,
}

impl Certifier {
    pub fn new(spec: &ChainSpec, keys: &[ValidatorKey]) -> anyhow::Result<Self> {
        let schemes = keys
            .iter()
            .map(|key| {
                let (_, share) = key.keys()?;
                Scheme::signer(
                    &spec.namespace(),
                    spec.participants()?,
                    spec.sharing()?,
                    share,
                )
                .context("a share of another group")
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Certifier { schemes })
    }

    /// The encoded finalization of `block` in view `view`.
    pub fn certify(&self, view: u64, block: Digest) -> anyhow::Result<Vec<u8>> {
        let round = Round::new(Epoch::zero(), View::new(view));
        let proposal = Proposal::new(round, View::new(view.saturating_sub(1)), block);
        let votes: Vec<Finalize<Scheme, Digest>> = self
            .schemes
            .iter()
            .map(|scheme| Finalize::sign(scheme, proposal.clone()).context("signing a vote"))
            .collect::<anyhow::Result<_>>()?;
        let scheme = self.schemes.first().context("no validators")?;
        let votes = NonEmpty::try_new(votes.iter()).context("no validators")?;
        let finalization =
            Finalization::from_finalizes(scheme, votes, &commonware_parallel::Sequential)
                .map_err(|e| anyhow!("assembling the certificate: {e:?}"))?;
        Ok(finalization.encode().to_vec())
    }
}
