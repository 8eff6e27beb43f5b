//! Test-only (feature `mocks`): the real state database hosted on a background thread, so that
//! tests without a commonware runtime of their own can use it, asynchronously ([`RemoteStore`])
//! or synchronously with the state in memory beside it ([`TestState`]).

use super::{Batch, BoxFuture, Entries, StateProof, StateStore, Store, StoreError, open};
use crate::state::{Changes, StateRead};
use commonware_runtime::{Runner as _, tokio};
use futures::{
    StreamExt as _,
    channel::{mpsc, oneshot},
    executor::block_on,
};
use phala_types::Digest;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    thread::JoinHandle,
};

type Hosted = StateStore<tokio::Context>;
type Job = Box<dyn for<'s> FnOnce(&'s mut Hosted) -> BoxFuture<'s, ()> + Send>;

/// A [`Store`] whose database lives on its own thread, in a temporary directory removed on drop.
pub struct RemoteStore {
    jobs: Option<mpsc::UnboundedSender<Job>>,
    root: Arc<Mutex<Digest>>,
    thread: Option<JoinHandle<()>>,
    directory: PathBuf,
}

impl RemoteStore {
    /// Starts an empty database.
    pub fn start() -> Self {
        let directory = std::env::temp_dir().join(format!(
            "phala-state-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let (jobs, mut queue) = mpsc::unbounded::<Job>();
        let (ready, started) = std::sync::mpsc::channel();
        let config = tokio::Config::new()
            .with_worker_threads(1)
            .with_storage_directory(directory.clone());
        let thread = std::thread::spawn(move || {
            tokio::Runner::new(config).start(|context| async move {
                let mut store = open(context, "state")
                    .await
                    .expect("open the test database");
                let _ = ready.send(store.root());
                while let Some(job) = queue.next().await {
                    job(&mut store).await;
                }
            })
        });
        let root = started.recv().expect("the test database started");
        RemoteStore {
            jobs: Some(jobs),
            root: Arc::new(Mutex::new(root)),
            thread: Some(thread),
            directory,
        }
    }

    /// Runs `job` on the database's thread and waits for its result.
    fn run<T: Send + 'static>(
        &self,
        job: impl for<'s> FnOnce(&'s mut Hosted) -> BoxFuture<'s, T> + Send + 'static,
    ) -> BoxFuture<'static, T> {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |store| {
            Box::pin(async move {
                let _ = reply.send(job(store).await);
            })
        });
        let sent = self.jobs.as_ref().map(|jobs| jobs.unbounded_send(job));
        Box::pin(async move {
            assert!(matches!(sent, Some(Ok(()))), "the test database stopped");
            result.await.expect("the test database answered")
        })
    }
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

impl Drop for RemoteStore {
    fn drop(&mut self) {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_dir_all(&self.directory);
    }
}

impl Store for RemoteStore {
    fn root(&self) -> Digest {
        *self.root.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn height(&self) -> BoxFuture<'_, Result<Option<u64>, StoreError>> {
        self.run(|store| Box::pin(async move { store.height().await }))
    }

    fn merkleize<'a>(
        &'a self,
        parent: Option<&'a Batch>,
        changes: &'a Changes,
        height: u64,
    ) -> BoxFuture<'a, Result<Batch, StoreError>> {
        let parent = parent.cloned();
        let changes = changes.clone();
        self.run(move |store| {
            Box::pin(async move { store.merkleize(parent.as_ref(), &changes, height).await })
        })
    }

    fn apply(&mut self, batch: Batch) -> BoxFuture<'_, Result<(), StoreError>> {
        let root = self.root.clone();
        self.run(move |store| {
            Box::pin(async move {
                store.apply(batch).await?;
                *root.lock().unwrap_or_else(|p| p.into_inner()) = store.root();
                Ok(())
            })
        })
    }

    fn prove<'a>(&'a self, key: &'a [u8]) -> BoxFuture<'a, Result<StateProof, StoreError>> {
        let key = key.to_vec();
        self.run(move |store| Box::pin(async move { store.prove(&key).await }))
    }

    fn load(&self) -> BoxFuture<'_, Result<Entries, StoreError>> {
        self.run(|store| Box::pin(async move { store.load().await }))
    }
}

/// The state for tests that execute blocks by hand: the real database (each [`TestState::apply`]
/// is one committed batch, the first one height 0) and its key-value pairs in memory for reads.
pub struct TestState {
    store: RemoteStore,
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    height: u64,
}

impl Default for TestState {
    fn default() -> Self {
        TestState {
            store: RemoteStore::start(),
            entries: BTreeMap::new(),
            height: 0,
        }
    }
}

impl StateRead for TestState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }
}

impl TestState {
    /// Commits `changes` as the next block's writes.
    pub fn apply(&mut self, changes: &Changes) {
        let batch = block_on(self.store.merkleize(None, changes, self.height)).expect("merkleize");
        block_on(self.store.apply(batch)).expect("apply");
        self.height += 1;
        for (key, value) in changes {
            match value {
                Some(value) => self.entries.insert(key.clone(), value.clone()),
                None => self.entries.remove(key),
            };
        }
    }

    /// The root of the committed state.
    pub fn root(&self) -> Digest {
        self.store.root()
    }

    /// The root the state would have after [`TestState::apply`] of `changes`.
    pub fn root_with(&self, changes: &Changes) -> Digest {
        block_on(self.store.merkleize(None, changes, self.height))
            .expect("merkleize")
            .root()
    }

    /// Proves `key`'s value or absence against [`TestState::root`].
    pub fn prove(&self, key: &[u8]) -> StateProof {
        block_on(self.store.prove(key)).expect("prove")
    }

    /// Key-value pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix<'a>(
        &'a self,
        prefix: &'a [u8],
    ) -> impl Iterator<Item = (&'a [u8], &'a [u8])> {
        self.entries
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
