//! Any bytes given to the contract decoders (the chain's messages to a cluster, the workers'
//! reports, the chain's records) either fail to decode or are the canonical encoding of what
//! they decode to.

#![no_main]

use commonware_codec::{Copying, Decode, DecodeExt, Encode};
use libfuzzer_sys::fuzz_target;
use phala_types::{
    ContractCommand, ContractInstantiated, ContractPublicKey, ContractQuota, ContractRecord,
    ContractReport, ReportRecord,
};

fn canonical<T: Decode<Cfg = ()> + Encode>(data: &[u8]) {
    if let Ok(value) = T::decode(Copying(data)) {
        assert_eq!(
            &value.encode()[..],
            data,
            "non-canonical {}",
            std::any::type_name::<T>()
        );
    }
}

fuzz_target!(|data: &[u8]| {
    canonical::<ContractInstantiated>(data);
    canonical::<ContractCommand>(data);
    canonical::<ContractPublicKey>(data);
    canonical::<ContractQuota>(data);
    canonical::<ContractReport>(data);
    canonical::<ContractRecord>(data);
    canonical::<ReportRecord>(data);
});
