//! Any bytes given to the registry's decoders (registrations with TEE evidence, the attestation
//! policy, worker records, and the gatekeepers' key payloads) either fail to decode or are the
//! canonical encoding of what they decode to.

#![no_main]

use commonware_codec::{Copying, Decode, DecodeExt, Encode};
use libfuzzer_sys::fuzz_target;
use phala_types::{
    AttestationPolicy, ClusterAssignment, GatekeeperJoined, KeyDelivery, MasterPublicKey,
    SignedRegistration, WorkerRecord,
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
    canonical::<SignedRegistration>(data);
    canonical::<AttestationPolicy>(data);
    canonical::<WorkerRecord>(data);
    canonical::<GatekeeperJoined>(data);
    canonical::<ClusterAssignment>(data);
    canonical::<MasterPublicKey>(data);
    canonical::<KeyDelivery>(data);
});
