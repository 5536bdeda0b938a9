//! biolatency's plan: block I/O latency from issue (or queueing) to
//! completion, on raw tracepoints, the block_io tracepoints, the plain
//! block_rq tracepoints or kprobes; and the names of its keys (disks from
//! /proc/partitions, request operations and flags from BTF).

use std::collections::HashMap;

use anyhow::{bail, Context as _, Result};
use tools_common::biolatency::{key_mode, programs, Config};

use super::{no_btf_reason, BtfSource, Plan};
use crate::{
    btf::Btf,
    ebpf_object,
    lifetime::BadInput,
    loader::{Attach, Build, Rung},
    offsets,
    tracefs::Format,
};

/// What to measure and how to group it.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// From insertion into the queue (`-Q`), not issue to the device.
    pub queued: bool,
    /// One histogram per disk (`-D`).
    pub per_disk: bool,
    /// One histogram per set of request flags (`-F`): only rungs that read
    /// the request can serve it.
    pub per_flags: bool,
    /// One histogram per operation (read, write, ...) where the rung knows
    /// it (the exporter): rungs without the request count under flags 0.
    pub per_operation: bool,
    /// Only this disk (`-d`), as (major << 20 | minor).
    pub disk_dev: Option<u32>,
    /// Only I/O started by tasks of this cgroup v2 directory (`-c`).
    pub cgroup: Option<std::path::PathBuf>,
    /// One histogram per cgroup of the task that started the I/O
    /// (`--containers`, which adds them up by container); not with flags.
    pub per_cgroup: bool,
    /// Nanoseconds per histogram unit.
    pub unit_ns: u64,
    /// Keyed: sums beside the histograms (what the exporter exposes).
    pub totals: bool,
}

/// The rungs that carry the request (and so its flags): the others
/// match completions by device and sector.
pub const RUNGS_WITH_FLAGS: [&str; 2] = ["raw_tracepoint", "kprobe"];

/// The configuration, the rungs best first, and the map sizes.
pub fn plan(options: &Options, btf: BtfSource<'_>, build: Build) -> Result<Plan<Config>> {
    let keyed_by_flags = options.per_flags || options.per_operation;
    let mut config = Config {
        unit_ns: options.unit_ns,
        key_mode: if options.per_disk { key_mode::DISK } else { 0 }
            | if keyed_by_flags { key_mode::FLAGS } else { 0 }
            | if options.per_cgroup { key_mode::CGROUP } else { 0 },
        disk_dev: options.disk_dev.unwrap_or(0),
        flags_mask: u32::MAX,
        totals: options.totals as u32,
        ..Config::default()
    };
    if options.per_operation && !options.per_flags {
        config.flags_mask = FlagNames::from_btf(btf.as_ref().ok()).map_or(0, |names| names.op_mask);
    }
    if (keyed_by_flags || options.per_disk) && options.per_cgroup {
        bail!("a key holds the request's disk and flags or its cgroup, not both");
    }
    config.cgroup = crate::cgroup::events_walk(options.cgroup.as_deref(), options.per_cgroup, btf.as_ref().ok())?;

    let no_request_offsets = no_btf_reason("struct request", btf, |btf| {
        config.rq = offsets::request(btf)?;
        Ok(())
    });
    // Before 5.11 (and 5.10.137) block_rq_issue/insert also passed the queue first.
    let with_queue = btf.as_ref().ok().and_then(|b| b.raw_tracepoint_args("block_rq_issue")) == Some(2);
    let raw = |plain, with_q| if with_queue { with_q } else { plain };
    let queued = options.queued;
    // Completion attaches first: a request started before it would never complete.
    let mut raw_rung =
        Rung::new("raw_tracepoint").program(programs::RAW_COMPLETE, Attach::raw_tp("block_rq_complete")).program(
            match queued {
                true => raw(programs::RAW_ISSUE_QUEUED, programs::RAW_ISSUE_QUEUED_Q),
                false => raw(programs::RAW_ISSUE, programs::RAW_ISSUE_Q),
            },
            Attach::raw_tp("block_rq_issue"),
        );
    let mut tp_rung = Rung::new("tracepoint")
        .program(programs::TP_COMPLETE, Attach::tracepoint("block", "block_rq_complete"))
        .program(
            if queued { programs::TP_ISSUE_QUEUED } else { programs::TP_ISSUE },
            Attach::tracepoint("block", "block_rq_issue"),
        );
    let mut kp_rung = Rung::new("kprobe")
        .program(
            programs::KP_COMPLETE,
            // The accounting done: 4.x (blk_account_io_done), 5.x
            // (__blk_account_io_done). 6.1 inlines both and refuses a kprobe
            // there; blk_update_request, where block_rq_complete fires, serves.
            Attach::kprobe(&["__blk_account_io_done", "blk_account_io_done", "blk_update_request"]),
        )
        .program(
            if queued { programs::KP_ISSUE_QUEUED } else { programs::KP_ISSUE },
            Attach::kprobe(&["blk_mq_start_request"]),
        );
    if queued {
        raw_rung =
            raw_rung.program(raw(programs::RAW_INSERT, programs::RAW_INSERT_Q), Attach::raw_tp("block_rq_insert"));
        tp_rung = tp_rung.program(programs::TP_INSERT, Attach::tracepoint("block", "block_rq_insert"));
        kp_rung = kp_rung
            .program(programs::KP_ACCOUNT_START, Attach::kprobe(&["__blk_account_io_start", "blk_account_io_start"]));
    }
    let io_rung =
        Rung::new("tracepoint_io").program(programs::TP_IO_DONE, Attach::tracepoint("block", "block_io_done")).program(
            if queued { programs::TP_IO_START } else { programs::TP_ISSUE },
            Attach::tracepoint("block", if queued { "block_io_start" } else { "block_rq_issue" }),
        );

    let no_tracepoint_fields = tracepoint_fields(&mut config).err().map(|e| format!("{e:#}"));
    let flags_need_request =
        options.per_flags.then(|| "-F needs the request's flags; plain block tracepoints do not carry them".to_owned());
    let rungs = vec![
        raw_rung.unusable_if(no_request_offsets.clone()),
        io_rung.unusable_if(no_tracepoint_fields.clone()).unusable_if(flags_need_request.clone()),
        tp_rung.unusable_if(no_tracepoint_fields).unusable_if(flags_need_request),
        kp_rung.unusable_if(no_request_offsets).unusable_if(super::current_task_refused(
            build,
            crate::cgroup::task_flag(options.cgroup.as_deref(), options.per_cgroup),
        )),
    ];
    let mut plan = Plan::new(ebpf_object!("biolatency"), build, config, rungs);
    plan.map_sizes = crate::histogram::map_sizes(config.key_mode != 0);
    Ok(plan)
}

fn tracepoint_fields(config: &mut Config) -> Result<()> {
    let mut layouts = Vec::new();
    for event in ["block_rq_issue", "block_rq_insert", "block_rq_complete", "block_io_start", "block_io_done"] {
        let format = match Format::read("block", event) {
            Ok(format) => format,
            // block_io_* exist from 6.5: without them that rung fails to attach, saying so.
            Err(_) if event.starts_with("block_io") => continue,
            Err(err) => return Err(err),
        };
        let dev = format.field_u32("dev")?;
        let sector = match format.field("sector")? {
            (offset, 8) => offset,
            (_, size) => bail!("{event} sector is {size} bytes, expected 8"),
        };
        layouts.push((dev, sector));
    }
    if layouts.windows(2).any(|w| w[0] != w[1]) {
        bail!("the block_rq_* and block_io_* records place dev and sector differently");
    }
    (config.tp_dev, config.tp_sector) = layouts[0];
    Ok(())
}

/// Block devices from /proc/partitions, by dev (major << 20 | minor).
pub struct Disks(HashMap<u32, String>);

impl Disks {
    pub fn read() -> Result<Self> {
        let text = crate::procfs::read("/proc/partitions")?;
        let disks = text
            .lines()
            .skip(2)
            .filter_map(|line| {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (major, minor): (u32, u32) = (f.first()?.parse().ok()?, f.get(1)?.parse().ok()?);
                Some(((major << 20) | minor, f.get(3)?.to_string()))
            })
            .collect();
        Ok(Disks(disks))
    }

    /// The dev of a whole disk named as in /proc/partitions (another name
    /// is the user's error, [`BadInput`]: exit status 2).
    pub fn dev(&self, name: &str) -> Result<u32> {
        let Some((&dev, _)) = self.0.iter().find(|(_, n)| *n == name) else {
            return Err(BadInput(format!("no such disk '{name}' (not in /proc/partitions)")).into());
        };
        if std::path::Path::new(&format!("/sys/class/block/{name}/partition")).exists() {
            let why =
                format!("'{name}' is a partition: block I/O is accounted to the whole disk, name the disk instead");
            return Err(BadInput(why).into());
        }
        Ok(dev)
    }

    pub fn get(&self, dev: u32) -> Option<&str> {
        self.0.get(&dev).map(String::as_str)
    }

    pub fn name(&self, dev: u32) -> String {
        self.get(dev).unwrap_or("?").to_owned()
    }
}

/// Names of request ops and flags from the running kernel's BTF (`req_op`,
/// `req_flag_bits`): their numbers changed across kernels.
pub struct FlagNames {
    /// The bits of `cmd_flags` that hold the operation.
    pub op_mask: u32,
    /// (value, the enum's name without `REQ_OP_`: `READ`, `WRITE_ZEROES`, ...)
    ops: Vec<(u32, String)>,
    /// (bit, name), highest bit first: BCC prints flags in that order, then the op.
    flags: Vec<(u32, String)>,
}

impl FlagNames {
    pub fn from_btf(btf: Option<&Btf>) -> Result<Self> {
        let btf = btf.context("-F names request flags from kernel BTF, which this kernel does not have")?;
        // `enum req_opf` until 5.19, then `enum req_op`.
        let ops = btf
            .enum_values("req_op")
            .or_else(|| btf.enum_values("req_opf"))
            .context("kernel BTF has no enum req_op or req_opf")?;
        let bits = btf.enum_values("req_flag_bits").context("kernel BTF has no enum req_flag_bits")?;
        let first_flag_bit = bits.iter().map(|(_, v)| *v).min().unwrap_or(8);
        // BCC's flags, in the order it prints them; their bits from this kernel.
        let flags = BCC_FLAGS
            .iter()
            .filter_map(|(enum_name, name)| {
                let (_, bit) = bits.iter().find(|(n, _)| n == enum_name)?;
                Some((*bit as u32, (*name).to_owned()))
            })
            .collect();
        Ok(FlagNames {
            op_mask: (1u32 << first_flag_bit) - 1,
            ops: ops
                .iter()
                .filter(|(name, _)| name != "REQ_OP_LAST")
                .map(|(name, v)| (*v as u32, name.trim_start_matches("REQ_OP_").to_owned()))
                .collect(),
            flags,
        })
    }

    /// BCC's name of a flag set: `Sync-Write`.
    pub fn describe(&self, cmd_flags: u32) -> String {
        let mut parts: Vec<&str> =
            self.flags.iter().filter(|(bit, _)| cmd_flags & (1 << bit) != 0).map(|(_, n)| n.as_str()).collect();
        let op = self.op(cmd_flags).map_or_else(|| "Unknown".to_owned(), op_name);
        parts.push(&op);
        parts.join("-")
    }

    /// The operation of `cmd_flags` as a metric label: `read`, `write_zeroes`.
    pub fn op_label(&self, cmd_flags: u32) -> Option<String> {
        self.op(cmd_flags).map(str::to_ascii_lowercase)
    }

    /// The enum's name of the operation of `cmd_flags`: `READ`, `WRITE_ZEROES`.
    fn op(&self, cmd_flags: u32) -> Option<&str> {
        let op = cmd_flags & self.op_mask;
        self.ops.iter().find(|(v, _)| *v == op).map(|(_, n)| n.as_str())
    }
}

/// The flags BCC's Python biolatency names, in its printed order.
const BCC_FLAGS: [(&str, &str); 9] = [
    ("__REQ_NOWAIT", "NoWait"),
    ("__REQ_BACKGROUND", "Background"),
    ("__REQ_RAHEAD", "ReadAhead"),
    ("__REQ_IDLE", "Idle"),
    ("__REQ_NOMERGE", "NoMerge"),
    ("__REQ_PRIO", "Priority"),
    ("__REQ_FUA", "ForcedUnitAccess"),
    ("__REQ_META", "Metadata"),
    ("__REQ_SYNC", "Sync"),
];

/// BCC's op names where it has one (`WriteZeros`), camel case otherwise.
fn op_name(upper_snake: &str) -> String {
    match upper_snake {
        "WRITE_ZEROES" => "WriteZeros".into(),
        other => camel(other),
    }
}

/// `WRITE_ZEROES` → `WriteZeroes`.
fn camel(upper_snake: &str) -> String {
    upper_snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next().map_or_else(String::new, |f| f.to_uppercase().chain(c.flat_map(char::to_lowercase)).collect())
        })
        .collect()
}
