//! `rvmx stat` and `rvmx run --stats`: the module's own counters, from debugfs
//! (`/sys/kernel/debug/rvmx/PID-N/stats` and `.../vcpuID/stats`, see rust/stats.rs).

use std::{
    fmt::Write,
    path::{Path, PathBuf},
};

use rvmx_logic::stats_format::{kvm_exit_name, vmx_reason_name, Counters, KVM_EXITS, VMX_REASONS};

/// Where rvmx.ko puts its statistics.
pub const DEBUGFS: &str = "/sys/kernel/debug/rvmx";

/// Why statistics cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{}: not an rvmx statistics file", .0.display())]
    NotStats(PathBuf),
    /// The debugfs directory is missing or unreadable.
    #[error("{}: {source} (is rvmx loaded, and debugfs mounted on /sys/kernel/debug?)", root.display())]
    NoDebugfs { root: PathBuf, source: std::io::Error },
    #[error("no statistics for this VM under {} (only rvmx keeps them; KVM's are in /sys/kernel/debug/kvm)", DEBUGFS)]
    NotRvmx,
    #[error("no VM {vm} under {}", root.display())]
    NoSuchVm { vm: String, root: PathBuf },
    #[error("no VM is running on rvmx ({} is empty)", .0.display())]
    NoVm(PathBuf),
}

/// For `map_err`: reading `path` failed.
fn read_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Read { path: path.to_path_buf(), source }
}

/// One VM's counters: the sum, and each vCPU's.
#[derive(Debug, PartialEq)]
pub struct VmStats {
    /// The directory's name, `PID-N`.
    pub name: String,
    pub total: Counters,
    pub vcpus: Vec<(u32, Counters)>,
}

fn read_counters(path: &Path) -> Result<Counters, Error> {
    let text = std::fs::read_to_string(path).map_err(read_error(path))?;
    Counters::parse(&text).ok_or_else(|| Error::NotStats(path.to_path_buf()))
}

/// Reads VM directory `dir`.
pub fn read_vm(dir: &Path) -> Result<VmStats, Error> {
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let total = read_counters(&dir.join("stats"))?;
    let mut vcpus = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error(dir))? {
        let entry = entry.map_err(read_error(dir))?;
        let file_name = entry.file_name();
        if let Some(id) = file_name.to_str().and_then(|n| n.strip_prefix("vcpu")).and_then(|n| n.parse().ok()) {
            vcpus.push((id, read_counters(&entry.path().join("stats"))?));
        }
    }
    vcpus.sort_by_key(|(id, _)| *id);
    Ok(VmStats { name, total, vcpus })
}

/// The VM directories under `root` (whose name starts with `prefix`), oldest first.
pub fn vm_dirs(root: &Path, prefix: &str) -> Result<Vec<PathBuf>, Error> {
    let entries = std::fs::read_dir(root).map_err(|source| Error::NoDebugfs { root: root.to_path_buf(), source })?;
    let mut dirs: Vec<(u32, u64, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (pid, n) = name.split_once('-')?;
            name.starts_with(prefix).then_some(())?;
            Some((pid.parse().ok()?, n.parse().ok()?, e.path()))
        })
        .collect();
    dirs.sort_by_key(|(_, n, _)| *n);
    Ok(dirs.into_iter().map(|(_, _, p)| p).collect())
}

/// The statistics of this process's newest VM (`rvmx run --stats`, before the VM is closed).
pub fn own_vm() -> Result<VmStats, Error> {
    let prefix = format!("{}-", std::process::id());
    let dirs = vm_dirs(Path::new(DEBUGFS), &prefix)?;
    let dir = dirs.last().ok_or(Error::NotRvmx)?;
    read_vm(dir)
}

/// A row of the table: a label and a value per column.
fn row(out: &mut String, label: &str, values: impl Iterator<Item = u64>) {
    let _ = write!(out, "{label:<28}");
    for v in values {
        let _ = write!(out, " {v:>14}");
    }
    out.push('\n');
}

/// The table `rvmx stat` prints: one column for the VM, one per vCPU.
pub fn table(vm: &VmStats) -> String {
    let cols: Vec<&Counters> = std::iter::once(&vm.total).chain(vm.vcpus.iter().map(|(_, c)| c)).collect();
    let mut out = format!("VM {} ({} vCPU{})\n", vm.name, vm.vcpus.len(), if vm.vcpus.len() == 1 { "" } else { "s" });
    let _ = write!(out, "{:<28} {:>14}", "", "total");
    for (id, _) in &vm.vcpus {
        let _ = write!(out, " {:>14}", format!("vcpu{id}"));
    }
    out.push('\n');
    row(&mut out, "KVM_RUN calls", cols.iter().map(|c| c.runs));
    row(&mut out, "VMX windows", cols.iter().map(|c| c.windows));
    row(&mut out, "VM exits", cols.iter().map(|c| c.exits));
    for r in (0..VMX_REASONS).filter(|r| vm.total.by_reason[*r] != 0) {
        let name = vmx_reason_name(r).map_or_else(|| format!("reason {r}"), str::to_string);
        row(&mut out, &format!("  {name}"), cols.iter().map(|c| c.by_reason[r]));
    }
    row(&mut out, "exits to userspace", cols.iter().map(|c| c.total_user_exits()));
    for r in (0..KVM_EXITS).filter(|r| vm.total.user_exits[*r] != 0) {
        let name = kvm_exit_name(r).unwrap_or("?");
        row(&mut out, &format!("  {name}"), cols.iter().map(|c| c.user_exits[r]));
    }
    row(&mut out, "EPT faults (RAM mapped)", cols.iter().map(|c| c.ept_faults));
    if vm.total.halt_polls != 0 {
        row(&mut out, "halts polled", cols.iter().map(|c| c.halt_polls));
        row(&mut out, "  woken while polling", cols.iter().map(|c| c.halt_poll_wakeups));
    }
    row(&mut out, "TSC ticks in guest mode", cols.iter().map(|c| c.guest_tsc));
    out
}

/// `rvmx stat [VM]`: every VM's table, or the one named `PID-N` (or the VMs of process PID).
pub fn stat(root: &Path, which: Option<&str>) -> Result<(), Error> {
    let dirs = vm_dirs(root, "")?;
    let chosen: Vec<&PathBuf> = dirs
        .iter()
        .filter(|d| {
            let name = d.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            which.is_none_or(|w| name == w || name.split_once('-').is_some_and(|(pid, _)| pid == w))
        })
        .collect();
    if chosen.is_empty() {
        return Err(match which {
            Some(w) => Error::NoSuchVm { vm: w.into(), root: root.to_path_buf() },
            None => Error::NoVm(root.to_path_buf()),
        });
    }
    for (i, dir) in chosen.iter().enumerate() {
        if i > 0 {
            println!();
        }
        // A VM may end between the listing and the read.
        match read_vm(dir) {
            Ok(vm) => print!("{}", table(&vm)),
            Err(e) => println!("{}: gone ({e})", dir.display()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(runs: u64, cpuid: u64, io: u64) -> Counters {
        let mut c = Counters { runs, windows: runs, exits: cpuid + io, guest_tsc: 1000, ept_faults: 3, ..Default::default() };
        c.by_reason[10] = cpuid;
        c.by_reason[30] = io;
        c.user_exits[2] = io;
        c
    }

    #[test]
    fn reads_a_vm_directory() {
        let root = std::env::temp_dir().join(format!("rvmx-stat-test-{}", std::process::id()));
        let vm = root.join("77-3");
        for (dir, c) in [(vm.clone(), counters(5, 7, 5)), (vm.join("vcpu1"), counters(2, 3, 2)), (vm.join("vcpu0"), counters(3, 4, 3))] {
            std::fs::create_dir_all(&dir).unwrap();
            let mut text = String::new();
            c.write(&mut text).unwrap();
            std::fs::write(dir.join("stats"), text).unwrap();
        }
        std::fs::create_dir_all(root.join("not-a-vm")).unwrap();
        std::fs::create_dir_all(root.join("78-1")).unwrap();
        let dirs = vm_dirs(&root, "").unwrap();
        assert_eq!(dirs, vec![root.join("78-1"), vm.clone()]);
        assert_eq!(vm_dirs(&root, "77-").unwrap(), vec![vm.clone()]);
        let stats = read_vm(&vm).unwrap();
        assert_eq!(stats.name, "77-3");
        assert_eq!(stats.vcpus, vec![(0, counters(3, 4, 3)), (1, counters(2, 3, 2))]);
        assert_eq!(stats.total, counters(5, 7, 5));
        assert!(read_vm(&root.join("78-1")).unwrap_err().to_string().contains("78-1/stats"));
        std::fs::write(vm.join("stats"), "runs many\n").unwrap();
        assert!(read_vm(&vm).unwrap_err().to_string().contains("not an rvmx statistics file"));
        std::fs::remove_dir_all(&root).unwrap();
        assert!(vm_dirs(&root, "").unwrap_err().to_string().contains("is rvmx loaded"));
    }

    #[test]
    fn table_has_a_column_per_vcpu_and_only_nonzero_reasons() {
        let vm = VmStats {
            name: "77-3".into(),
            total: counters(5, 7, 5),
            vcpus: vec![(0, counters(3, 4, 3)), (1, counters(2, 3, 2))],
        };
        let t = table(&vm);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "VM 77-3 (2 vCPUs)");
        assert!(lines[1].trim_start().starts_with("total") && lines[1].ends_with("vcpu1"));
        let cells = |label: &str| -> Vec<String> {
            let l = lines.iter().find(|l| l.starts_with(label)).unwrap_or_else(|| panic!("no row {label}"));
            l[28..].split_whitespace().map(str::to_string).collect()
        };
        assert_eq!(cells("KVM_RUN calls"), ["5", "3", "2"]);
        assert_eq!(cells("  CPUID"), ["7", "4", "3"]);
        assert_eq!(cells("  IO_INSTRUCTION"), ["5", "3", "2"]);
        assert_eq!(cells("  IO "), ["5", "3", "2"]);
        assert_eq!(cells("exits to userspace"), ["5", "3", "2"]);
        assert_eq!(cells("EPT faults"), ["3", "3", "3"]);
        assert!(!t.contains("HLT"));
    }
}
