// SPDX-License-Identifier: GPL-2.0

//! The VM fd (`KVM_CREATE_VM`): its ioctls, answered as KVM's VM fd answers them, and
//! `KVM_CREATE_VCPU`.

use kernel::{prelude::*, sync::ArcBorrow};

use crate::{
    host::uaccess::{read_user, write_user},
    kvm::{
        fd::{self, FdObject},
        vcpu::Vcpu,
        vm::Vm,
    },
    logic::kvm_abi::*,
};

impl FdObject for Vm {
    const NAME: &'static CStr = c"kvm-vm";

    fn ioctl(this: ArcBorrow<'_, Self>, cmd: u32, arg: usize) -> Result<isize> {
        this.check_owner()?;
        match cmd {
            KVM_CREATE_VCPU => create_vcpu(this, arg),
            KVM_SET_USER_MEMORY_REGION => this.set_memory_region(read_user(arg)?),
            KVM_SET_USER_MEMORY_REGION2 => {
                let r: UserspaceMemoryRegion2 = read_user(arg)?;
                this.set_memory_region(r.region())
            }
            KVM_GET_DIRTY_LOG => this.get_dirty_log(arg),
            KVM_CHECK_EXTENSION => Ok(match arg {
                // A VM without the split irqchip cannot enable EOI broadcast suppression.
                cap::X2APIC_API => {
                    crate::logic::x2apic_api::capability(!this.split_irqchip()) as isize
                }
                cap::X86_APIC_BUS_CYCLES_NS => this.apic_bus_cycle_ns() as isize,
                _ => crate::logic::kvm_abi::check_extension(arg),
            }),
            // With unrestricted guest rvmx needs neither the real-mode TSS nor the identity map
            // that KVM keeps for CPUs without it: both are checked as KVM checks them, then
            // not used.
            KVM_SET_TSS_ADDR => {
                // The three pages must fit below 4 GiB.
                if arg as u64 > (1 << 32) - 3 * 4096 {
                    return Err(EINVAL);
                }
                Ok(0)
            }
            KVM_SET_IDENTITY_MAP_ADDR => {
                if this.has_vcpus() {
                    return Err(EINVAL); // only before the first vCPU
                }
                let _addr: u64 = read_user(arg)?;
                Ok(0)
            }
            KVM_IRQFD => {
                this.irqfd(&read_user(arg)?)?;
                Ok(0)
            }
            KVM_IOEVENTFD => {
                this.ioeventfd(&read_user(arg)?)?;
                Ok(0)
            }
            KVM_REGISTER_COALESCED_MMIO | KVM_UNREGISTER_COALESCED_MMIO => {
                this.coalesced_mmio(&read_user(arg)?, cmd == KVM_REGISTER_COALESCED_MMIO)?;
                Ok(0)
            }
            // KVM reads the header first, then refuses without an in-kernel irqchip (QEMU
            // only asks for the capability with one).
            KVM_SET_GSI_ROUTING => {
                if !this.irqchip_in_kernel() {
                    let _header: u64 = read_user(arg)?;
                    return Err(EINVAL);
                }
                this.apic_bus().set_routes(arg)?;
                Ok(0)
            }
            // Without an in-kernel irqchip there is no line to set (KVM reads the argument
            // first: EFAULT for a bad pointer). With one, the GSI's routes.
            KVM_IRQ_LINE | KVM_IRQ_LINE_STATUS => {
                let mut line: IrqLevel = read_user(arg)?;
                if !this.irqchip_in_kernel() {
                    return Err(ENXIO);
                }
                let status = this.irq_line(line.irq, line.level, cmd == KVM_IRQ_LINE_STATUS);
                if cmd == KVM_IRQ_LINE_STATUS {
                    line.irq = status as u32;
                    write_user(arg, &line)?;
                }
                Ok(0)
            }
            // No local APIC to send an MSI to without the split irqchip: EINVAL after the
            // copy, as KVM.
            KVM_SIGNAL_MSI => {
                let msi: Msi = read_user(arg)?;
                if !this.irqchip_in_kernel() {
                    return Err(EINVAL);
                }
                this.signal_msi(&msi)
            }
            KVM_CREATE_IRQCHIP => {
                this.create_irqchip()?;
                Ok(0)
            }
            // KVM copies the whole structure in first (EFAULT), then ENXIO without the chips,
            // EINVAL for a chip id it does not know.
            KVM_GET_IRQCHIP => {
                let mut chip: Irqchip = read_user(arg)?;
                this.irqchip()?.get(&mut chip)?;
                write_user(arg, &chip)?;
                Ok(0)
            }
            KVM_SET_IRQCHIP => {
                let chip: Irqchip = read_user(arg)?;
                this.irqchip()?.set(this.apic_bus(), &chip)?;
                Ok(0)
            }
            KVM_CREATE_PIT => {
                this.create_pit(crate::irq::pit::SPEAKER_DUMMY)?;
                Ok(0)
            }
            KVM_CREATE_PIT2 => {
                let config: crate::logic::pit::PitConfig = read_user(arg)?;
                this.create_pit(config.flags)?;
                Ok(0)
            }
            // As KVM: the argument is copied first (EFAULT), then ENXIO without a PIT.
            KVM_GET_PIT => {
                let _in: crate::logic::pit::PitState = read_user(arg)?;
                let s = this.pit()?.state();
                write_user(arg, &crate::logic::pit::PitState { channels: s.channels })?;
                Ok(0)
            }
            KVM_SET_PIT => {
                let v1: crate::logic::pit::PitState = read_user(arg)?;
                this.pit()?.set_channels(&v1.channels);
                Ok(0)
            }
            KVM_GET_PIT2 => {
                let s = this.pit()?.state();
                write_user(arg, &s)?;
                Ok(0)
            }
            KVM_SET_PIT2 => {
                let s: crate::logic::pit::PitState2 = read_user(arg)?;
                this.pit()?.set_state(&s);
                Ok(0)
            }
            KVM_REINJECT_CONTROL => {
                let c: crate::logic::pit::ReinjectControl = read_user(arg)?;
                this.pit()?.set_reinject(c.pit_reinject != 0);
                Ok(0)
            }
            KVM_GET_CLOCK => {
                write_user(arg, &this.clock().get())?;
                Ok(0)
            }
            KVM_SET_CLOCK => {
                this.clock().set(&read_user(arg)?)?;
                Ok(0)
            }
            // The rate new vCPUs get: the host's (no TSC scaling).
            KVM_GET_TSC_KHZ => Ok(crate::host::x86::tsc_khz() as isize),
            KVM_ENABLE_CAP => enable_cap(this, &read_user(arg)?),
            KVM_GET_STATS_FD => this.stats_fd(),
            KVM_X86_SET_MSR_FILTER => {
                this.set_msr_filter(&read_user(arg)?)?;
                Ok(0)
            }
            KVM_SET_BOOT_CPU_ID => {
                this.set_bsp_vcpu_id(arg)?;
                Ok(0)
            }
            // KVM's VM fd answers ENOTTY to requests it does not know (kvm_arch_vm_ioctl).
            _ => Err(ENOTTY),
        }
    }
}

/// `KVM_ENABLE_CAP` on the VM fd: the capabilities rvmx reports that have something to enable,
/// checked as KVM's `kvm_vm_ioctl_enable_cap`; `EINVAL` for every other (rvmx has none of
/// KVM's generic ones, which KVM would check first).
fn enable_cap(vm: ArcBorrow<'_, Vm>, c: &EnableCap) -> Result<isize> {
    if c.flags != 0 {
        return Err(EINVAL);
    }
    let arg = c.args[0];
    match c.cap as usize {
        cap::DISABLE_QUIRKS2 if arg & !quirk::SUPPORTED != 0 => Err(EINVAL),
        cap::DISABLE_QUIRKS | cap::DISABLE_QUIRKS2 => {
            vm.disable_quirks(arg & quirk::SUPPORTED);
            Ok(0)
        }
        cap::EXIT_ON_EMULATION_FAILURE => {
            vm.set_exit_on_emulation_failure(arg)?;
            Ok(0)
        }
        cap::X86_USER_SPACE_MSR => {
            vm.set_user_space_msr(arg)?;
            Ok(0)
        }
        cap::MSR_PLATFORM_INFO => {
            vm.set_platform_info_readable(arg != 0);
            Ok(0)
        }
        cap::MAX_VCPU_ID => {
            vm.set_max_vcpu_ids(arg)?;
            Ok(0)
        }
        cap::SPLIT_IRQCHIP => {
            vm.enable_split_irqchip(arg)?;
            Ok(0)
        }
        cap::X86_APIC_BUS_CYCLES_NS => {
            vm.set_apic_bus_cycle_ns(arg)?;
            Ok(0)
        }
        cap::X2APIC_API => {
            vm.enable_x2apic_api(arg)?;
            Ok(0)
        }
        cap::HALT_POLL => {
            vm.set_max_halt_poll_ns(arg)?;
            Ok(0)
        }
        _ => Err(EINVAL),
    }
}

/// `KVM_CREATE_VCPU`: a vCPU with id `id` and its fd.
fn create_vcpu(vm: ArcBorrow<'_, Vm>, id: usize) -> Result<isize> {
    let (id, stats) = vm.reserve_vcpu(id)?;
    let vcpu = Vcpu::new(vm.into(), id, stats).and_then(|v| {
        let fd = fd::install(v.clone())?;
        v.postcreate();
        Ok(fd as isize)
    });
    if vcpu.is_err() {
        vm.release_vcpu(id);
    }
    vcpu
}
