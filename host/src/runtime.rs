//! The wasm runtime: one engine (pooling allocator, epoch interruption), the
//! linker with every WASI 0.2 import plus polytrace's telemetry, the on-disk
//! cache of compiled components. What a store holds is in [`crate::instance`].

use crate::bindings::Imports;
use crate::instance::InstanceState;
use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::p2::bindings::ProxyPre;

/// How often the epoch advances: the granularity of timeouts, and how often
/// a busy guest yields to others.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Default for how many instances may be alive at once (concurrent
/// requests, in-process calls included); past this, requests get 503.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;

/// Bytes of each memory and table the pooling allocator resets in place.
const KEEP_RESIDENT: usize = 4 << 20;
/// Slots whose memory is returned to the kernel in one madvise batch.
const DECOMMIT_BATCH: usize = 32;

/// The engine, linker and compiled-code cache shared by every component.
pub struct Runtime {
    pub engine: Engine,
    pub linker: Linker<InstanceState>,
    /// Instances alive at once, all components together (`--max-instances`).
    pub max_instances: u32,
    cache_dir: Option<PathBuf>,
}

impl Runtime {
    /// Build the engine. `max_memory` is the largest per-instance memory any
    /// component may use (the pooling allocator reserves slots of that size).
    pub fn new(
        max_memory: u64,
        max_instances: u32,
        cache_dir: Option<PathBuf>,
    ) -> anyhow::Result<Runtime> {
        let max_instances = max_instances.max(1);
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Guests are WASI 0.2 components (sync lifts, async host calls on
        // fibers): the component-model-async machinery would only add a
        // host-task table entry to every guest->host call (~10% of a guest
        // span's cost in the span_cost profile).
        config.concurrency_support(false);
        config.epoch_interruption(true);
        // POLYTRACE_PROFILE=perfmap writes /tmp/perf-PID.map, so that `perf`
        // names guest functions in its samples (as wasmtime's `--profile`).
        if std::env::var("POLYTRACE_PROFILE").as_deref() == Ok("perfmap") {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        config.wasm_backtrace_max_frames(std::num::NonZeroUsize::new(64));

        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(max_instances);
        // Python and JavaScript components are several core modules each.
        pool.max_core_instances_per_component(64);
        pool.max_memories_per_component(16);
        pool.max_tables_per_component(64);
        pool.total_core_instances(max_instances.saturating_mul(16));
        pool.total_memories(max_instances.saturating_mul(4));
        pool.total_tables(max_instances.saturating_mul(16));
        pool.total_stacks(max_instances);
        pool.max_component_instance_size(1 << 20);
        pool.max_core_instance_size(1 << 20);
        pool.table_elements(100_000);
        pool.max_memory_size(max_memory as usize);
        // Every madvise that resets a slot is a TLB shootdown on every core
        // running the host, which under load cost more than the guest's own
        // work (docs/benchmarks.md). So: reset the first few MiB in place
        // (only the dirty pages, where the kernel can say which), and batch
        // the decommits that remain.
        pool.linear_memory_keep_resident(KEEP_RESIDENT);
        pool.table_keep_resident(KEEP_RESIDENT);
        pool.pagemap_scan(wasmtime::Enabled::Auto);
        pool.decommit_batch_size(DECOMMIT_BATCH);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));

        // The pool reserves address space for every slot at once: too many
        // instances (or too large a memory limit) is refused here.
        let engine = Engine::new(&config).map_err(|e| {
            anyhow::anyhow!(
                "creating the wasm engine: {e:#}. Its instance pool reserves address space for \
                 --max-instances {max_instances} instances with up to 4 memories of {} MiB \
                 each (the largest `limits.memory_mb` of the manifest) plus guard regions; lower \
                 --max-instances or the components' memory limit",
                max_memory >> 20
            )
        })?;
        let mut linker = Linker::new(&engine);
        // Every WASI 0.2 interface the guest toolchains import (cli,
        // filesystem and sockets included, with nothing granted); versions
        // 0.2.x match by semver.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        Imports::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        crate::data::kv::KeyValueImports::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("polytrace-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        Ok(Runtime {
            engine,
            linker,
            max_instances,
            cache_dir,
        })
    }

    /// Load a component, compiling it only when no cached artifact for these
    /// exact bytes and this engine exists. `progress` hears what happens.
    pub fn load(&self, path: &Path, progress: &dyn Fn(Progress)) -> anyhow::Result<Component> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))?;
        let key = self.cache_key(&bytes);
        let cached = self
            .cache_dir
            .as_ref()
            .map(|d| d.join(format!("{key}.cwasm")));
        if let Some(file) = &cached
            && file.exists()
        {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the key),
            // into polytrace's own cache directory.
            match unsafe { Component::deserialize_file(&self.engine, file) } {
                Ok(c) => {
                    progress(Progress::Cached);
                    return Ok(c);
                }
                Err(e) => tracing::warn!("ignoring unusable cache entry {}: {e}", file.display()),
            }
        }
        if !bytes.starts_with(b"\0asm") {
            anyhow::bail!(
                "`{}` is not a WebAssembly binary (it lacks the `\\0asm` header). \
                 Point `source` at the .wasm component your build produces",
                path.display()
            );
        }
        progress(Progress::Compiling { bytes: bytes.len() });
        let started = Instant::now();
        let component = Component::new(&self.engine, &bytes).map_err(|e| {
            anyhow::anyhow!(
                "`{}` is not a valid WebAssembly component: {e:#}. \
                 Build it for wasm32-wasip2 (or componentize it) against the polytrace:telemetry/service world",
                path.display()
            )
        })?;
        progress(Progress::Compiled {
            elapsed: started.elapsed(),
        });
        if let Some(file) = cached
            && let Err(e) = write_atomically(&file, &component.serialize()?)
        {
            tracing::warn!("cannot cache compiled code in {}: {e}", file.display());
        }
        Ok(component)
    }

    /// Check a component against the world and pre-instantiate it.
    pub fn prepare(&self, component: &Component) -> anyhow::Result<ProxyPre<InstanceState>> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| {
            anyhow::anyhow!(
                "does not fit the polytrace:telemetry/service world: {e:#}. \
                 polytrace provides wasi 0.2.x (cli, clocks, random, io, filesystem, sockets, http) \
                 and polytrace:telemetry@0.1.0 (tracing, metrics, logs)"
            )
        })?;
        ProxyPre::new(pre).map_err(|e| {
            anyhow::anyhow!(
                "does not export `wasi:http/incoming-handler@0.2.x`: {e:#}. \
                 A polytrace component is a wasi:http proxy"
            )
        })
    }

    fn cache_key(&self, bytes: &[u8]) -> String {
        struct Sha(Sha256);
        impl Hasher for Sha {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.update(bytes);
            }
        }
        let mut h = Sha(Sha256::new());
        self.engine.precompile_compatibility_hash().hash(&mut h);
        h.0.update(env!("CARGO_PKG_VERSION"));
        h.0.update(bytes);
        h.0.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What loading a component is doing, for progress display.
#[derive(Debug, Clone, Copy)]
pub enum Progress {
    Cached,
    Compiling { bytes: usize },
    Compiled { elapsed: Duration },
}

fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = file.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        file.file_name().unwrap_or_default().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

/// The default cache directory: `$POLYTRACE_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/polytrace`, else `~/.cache/polytrace`.
pub fn default_cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("POLYTRACE_CACHE_DIR") {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Some(PathBuf::from(d).join("polytrace"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("polytrace"))
}
