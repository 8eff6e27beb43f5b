//! Key management inside the enclave: the master key (gatekeepers), cluster keys (workers), and
//! how they move between enclaves through the queue.
//!
//! Every gatekeeper runs this same logic over the same chain messages, so all gatekeepers that
//! hold a key emit byte-identical deliveries (the HPKE ephemeral key is derived from the master
//! key and the delivery's context), and the chain keeps the first copy. Only new master key
//! generations are random; the first gatekeeper of the set creates them.

use bytes::Bytes;
use commonware_codec::Encode;
use phala_crypto::{
    Keypair,
    secrets::{self, EcdhKeypair},
};
use phala_types::{
    Address, ClusterAssignment, ContractInstantiated, ContractPublicKey, DownwardMessage,
    GatekeeperJoined, KeyDelivery, MasterPublicKey,
    contracts::topics as contract_topics,
    registry::{decode_payload, topics},
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Label of cluster keys derived from a master key.
pub const CLUSTER_KEY_LABEL: &[u8] = b"phala/cluster-key/v1";
/// Label of contract keys derived from a cluster key (used by contracts).
pub const CONTRACT_KEY_LABEL: &[u8] = b"phala/contract-key/v1";
const MASTER_IDENTITY_LABEL: &[u8] = b"phala/master-identity/v1";
const DELIVERY_INFO: &[u8] = b"phala/key-delivery/v1";
const DELIVERY_EPHEMERAL_LABEL: &[u8] = b"phala/key-delivery-ephemeral/v1";

/// The public key the chain records for a master key: an ed25519 key derived from it.
pub fn master_public_key(master: &[u8; 32]) -> [u8; 32] {
    let seed = secrets::derive_key(master, MASTER_IDENTITY_LABEL, b"");
    Keypair::from_secret(seed).address().0
}

/// A cluster's key of one master generation.
pub fn cluster_key(master: &[u8; 32], cluster: u32) -> [u8; 32] {
    secrets::derive_key(master, CLUSTER_KEY_LABEL, &cluster.to_be_bytes())
}

/// A contract's key: its HPKE keypair seed and the root of its state sealing.
pub fn contract_key(cluster_key: &[u8; 32], contract: &[u8; 32]) -> [u8; 32] {
    secrets::derive_key(cluster_key, CONTRACT_KEY_LABEL, contract)
}

/// An upward message to send: topic and payload; the runtime signs and sequences it.
pub type Outgoing = (&'static [u8], Bytes);

/// What this pRuntime knows and holds of the network's keys. Sealed in its checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyState {
    /// Master key generations held (gatekeepers only).
    pub master: BTreeMap<u32, [u8; 32]>,
    /// Master public keys the chain recorded, by generation.
    pub published: BTreeMap<u32, [u8; 32]>,
    /// The gatekeeper set in join order, with their ECDH keys.
    pub gatekeepers: Vec<(Address, [u8; 32])>,
    /// Cluster of each assigned worker, with its ECDH key.
    pub assignments: BTreeMap<Address, ([u8; 32], u32)>,
    /// Cluster keys held.
    pub cluster_keys: Vec<ClusterKey>,
    /// Deliveries refused (bad ciphertext or key mismatch), for operators.
    pub refused_deliveries: u64,
}

/// One cluster key of one master generation; old generations stay for decryption.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterKey {
    pub cluster: u32,
    pub generation: u32,
    pub key: [u8; 32],
}

/// Who is handling the messages.
pub struct Me<'a> {
    pub identity: Address,
    pub ecdh: &'a EcdhKeypair,
    pub gatekeeper: bool,
}

impl KeyState {
    /// Handles one verified chain message; returns the upward messages it calls for.
    pub fn handle(&mut self, me: &Me<'_>, message: &DownwardMessage) -> Vec<Outgoing> {
        let topic = message.topic.as_ref();
        let payload = message.payload.as_ref();
        let mut out = Vec::new();
        // Payloads were produced by the chain's own registry; a malformed one is skipped (the
        // chain is trusted for content, so this is only defence in depth).
        if topic == topics::MASTER_KEY_PUBLISHED {
            if let Ok(key) = decode_payload::<MasterPublicKey>(payload) {
                self.on_published(me, &key, &mut out);
            }
        } else if topic == topics::DELIVER_KEY {
            if let Ok(delivery) = decode_payload::<KeyDelivery>(payload) {
                self.on_delivery(me, &delivery);
            }
        } else if me.gatekeeper {
            if topic == contract_topics::INSTANTIATED {
                if let Ok(instantiated) = decode_payload::<ContractInstantiated>(payload) {
                    out.extend(self.contract_public_key(&instantiated));
                }
            } else if topic == topics::GATEKEEPER_JOINED {
                if let Ok(joined) = decode_payload::<GatekeeperJoined>(payload) {
                    self.on_joined(me, &joined, &mut out);
                }
            } else if topic == topics::WORKER_ASSIGNED {
                if let Ok(assignment) = decode_payload::<ClusterAssignment>(payload) {
                    self.on_assigned(&assignment, &mut out);
                }
            } else if topic == topics::ROTATE_MASTER_KEY
                && let Ok(bytes) = <[u8; 4]>::try_from(payload)
            {
                self.on_rotate(me, u32::from_be_bytes(bytes), &mut out);
            }
        }
        out
    }

    /// The key of `cluster` from master generation `generation`: held (workers) or derived
    /// from the master key (gatekeepers).
    pub fn cluster_key_of(&self, cluster: u32, generation: u32) -> Option<[u8; 32]> {
        self.cluster_keys
            .iter()
            .find(|k| (k.cluster, k.generation) == (cluster, generation))
            .map(|k| k.key)
            .or_else(|| {
                self.master
                    .get(&generation)
                    .map(|master| cluster_key(master, cluster))
            })
    }

    /// A gatekeeper's announcement of a new contract's public key (identical on every
    /// gatekeeper holding the generation; the chain keeps the first).
    fn contract_public_key(&self, instantiated: &ContractInstantiated) -> Option<Outgoing> {
        let master = self.master.get(&instantiated.generation)?;
        let key = contract_key(
            &cluster_key(master, instantiated.cluster),
            &instantiated.contract,
        );
        let public = ContractPublicKey {
            contract: instantiated.contract,
            public_key: EcdhKeypair::from_seed(&key).public(),
        };
        Some((
            contract_topics::PUBLISH_KEY,
            Bytes::from(public.encode().to_vec()),
        ))
    }

    fn on_joined(&mut self, me: &Me<'_>, joined: &GatekeeperJoined, out: &mut Vec<Outgoing>) {
        self.gatekeepers.push((joined.identity, joined.ecdh));
        if joined.identity == me.identity {
            if joined.bootstrap && self.master.is_empty() {
                self.create_master(1, out);
            }
            return;
        }
        for (generation, master) in &self.master {
            out.extend(deliver(
                master,
                joined.identity,
                &joined.ecdh,
                KeyDelivery::MASTER,
                *generation,
                master,
            ));
        }
    }

    fn on_assigned(&mut self, assignment: &ClusterAssignment, out: &mut Vec<Outgoing>) {
        self.assignments
            .insert(assignment.worker, (assignment.ecdh, assignment.cluster));
        // Every recorded generation: contracts instantiated under an old one need its key.
        for (generation, master) in &self.master {
            if !self.published.contains_key(generation) {
                continue;
            }
            let key = cluster_key(master, assignment.cluster);
            let kind = KeyDelivery::cluster(assignment.cluster);
            out.extend(deliver(
                master,
                assignment.worker,
                &assignment.ecdh,
                kind,
                *generation,
                &key,
            ));
        }
    }

    fn on_rotate(&mut self, me: &Me<'_>, generation: u32, out: &mut Vec<Outgoing>) {
        let leader = self.gatekeepers.first().map(|(id, _)| *id);
        let holds_previous = self.master.contains_key(&(generation.saturating_sub(1)));
        if leader != Some(me.identity) || !holds_previous || self.master.contains_key(&generation) {
            return;
        }
        self.create_master(generation, out);
        let master = self.master[&generation];
        for (identity, ecdh) in &self.gatekeepers {
            if *identity != me.identity {
                out.extend(deliver(
                    &master,
                    *identity,
                    ecdh,
                    KeyDelivery::MASTER,
                    generation,
                    &master,
                ));
            }
        }
    }

    /// A new random master key generation, announced by its public key.
    fn create_master(&mut self, generation: u32, out: &mut Vec<Outgoing>) {
        let master: [u8; 32] = rand::random();
        self.master.insert(generation, master);
        let public = MasterPublicKey {
            generation,
            public_key: master_public_key(&master),
        };
        out.push((
            topics::PUBLISH_MASTER_KEY,
            Bytes::from(public.encode().to_vec()),
        ));
    }

    fn on_published(&mut self, me: &Me<'_>, key: &MasterPublicKey, out: &mut Vec<Outgoing>) {
        self.published.insert(key.generation, key.public_key);
        // A generation we hold that the chain did not record is not the network's: forget it.
        if let Some(held) = self.master.get(&key.generation)
            && master_public_key(held) != key.public_key
        {
            self.master.remove(&key.generation);
        }
        if !me.gatekeeper {
            return;
        }
        if let Some(master) = self.master.get(&key.generation) {
            for (worker, (ecdh, cluster)) in &self.assignments {
                let cluster_key = cluster_key(master, *cluster);
                let kind = KeyDelivery::cluster(*cluster);
                out.extend(deliver(
                    master,
                    *worker,
                    ecdh,
                    kind,
                    key.generation,
                    &cluster_key,
                ));
            }
        }
    }

    fn on_delivery(&mut self, me: &Me<'_>, delivery: &KeyDelivery) {
        if delivery.recipient != me.identity {
            return;
        }
        let info = delivery_info(delivery.recipient, delivery.key_kind, delivery.generation);
        let Ok(secret) = me
            .ecdh
            .open(&info, &delivery.encapped, &delivery.ciphertext)
            .map_err(|_| ())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| ()))
        else {
            self.refused_deliveries += 1;
            return;
        };
        if delivery.key_kind == KeyDelivery::MASTER {
            match self.published.get(&delivery.generation) {
                Some(public) if *public == master_public_key(&secret) => {
                    self.master.insert(delivery.generation, secret);
                }
                _ => self.refused_deliveries += 1,
            }
        } else {
            let cluster = delivery.key_kind - 1;
            let generation = delivery.generation;
            // The first key of a (cluster, generation) stays: a different later one is refused.
            if let Some(held) = self
                .cluster_keys
                .iter()
                .find(|k| (k.cluster, k.generation) == (cluster, generation))
            {
                if held.key != secret {
                    self.refused_deliveries += 1;
                }
                return;
            }
            self.cluster_keys.push(ClusterKey {
                cluster,
                generation,
                key: secret,
            });
        }
    }
}

fn delivery_info(recipient: Address, kind: u32, generation: u32) -> Vec<u8> {
    [
        DELIVERY_INFO,
        &recipient.0,
        &kind.to_be_bytes(),
        &generation.to_be_bytes(),
    ]
    .concat()
}

/// Seals `secret` to a recipient, deterministically from `master` and the delivery's context.
fn deliver(
    master: &[u8; 32],
    recipient: Address,
    ecdh: &[u8; 32],
    key_kind: u32,
    generation: u32,
    secret: &[u8; 32],
) -> Option<Outgoing> {
    let info = delivery_info(recipient, key_kind, generation);
    let seed = secrets::derive_key(master, DELIVERY_EPHEMERAL_LABEL, &info);
    // A recipient key that is not a valid x25519 point cannot receive anything: nothing is sent
    // (every gatekeeper decides the same, so the set stays in agreement).
    let (encapped, ciphertext) =
        secrets::seal(ecdh, &info, secret, &mut secrets::seeded_rng(seed)).ok()?;
    let delivery = KeyDelivery {
        recipient,
        key_kind,
        generation,
        encapped,
        ciphertext: ciphertext.try_into().ok()?,
    };
    Some((topics::DELIVER_KEY, Bytes::from(delivery.encode().to_vec())))
}
