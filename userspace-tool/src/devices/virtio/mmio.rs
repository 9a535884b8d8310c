//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): one page of registers per device,
//! through which the driver negotiates features, places each queue in guest memory and drives
//! the device's status. Accesses come from vCPU threads (MMIO exits) and take the registers'
//! lock; the device's thread ([`Transport::work`]) takes it only to take requests from the rings
//! and to put their results back, not while it serves them, and `InterruptStatus`, which the
//! guest's interrupt handler reads and acknowledges, is an atomic outside it: a slow request
//! never holds up a vCPU.

use std::{
    num::Wrapping,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Mutex, MutexGuard,
    },
};

use virtio_bindings::{
    virtio_config::{
        VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET, VIRTIO_F_VERSION_1,
    },
    virtio_mmio::*,
    virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC},
};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::{Chain, Device, QUEUE_MAX};

/// "virt", little-endian.
const MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) register layout.
const VERSION: u32 = 2;
/// "RVMX".
const VENDOR: u32 = 0x584d_5652;
/// The transport's own features, offered with every device's.
const TRANSPORT_FEATURES: u64 =
    1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX | 1 << VIRTIO_RING_F_INDIRECT_DESC;

/// How often [`Transport::work`] goes back to the rings before it lets other work run: a
/// driver that keeps a queue full gets the device thread back at once, through its own notify.
const PASSES: usize = 4;

/// The registers' state.
struct State {
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<Queue>,
    /// Resets so far: requests taken before a reset are not completed after it.
    resets: u64,
}

/// One virtio-mmio device.
pub struct Transport {
    /// The registers and rings, under the lock vCPU threads and the device thread share; the
    /// device's own work (disk I/O) happens outside it.
    state: Mutex<State>,
    device: Box<dyn Device>,
    /// `InterruptStatus`: used buffers (bit 0), configuration change (bit 1).
    interrupt: AtomicU32,
    /// Signalled by every write to `QueueNotify`.
    pub notify: EventFd,
    /// The guest broke a queue: said once.
    broken: AtomicBool,
}

/// Requests taken from the rings: queue, descriptor chain.
type Batch<'m> = Vec<(usize, Chain<'m>)>;

impl Transport {
    pub fn new(device: Box<dyn Device>) -> std::io::Result<Self> {
        let queues = (0..device.queues()).map(|_| Queue::new(QUEUE_MAX).expect("QUEUE_MAX is a power of two")).collect();
        let state = State {
            status: 0, device_features_sel: 0, driver_features_sel: 0, driver_features: 0, queue_sel: 0, queues, resets: 0,
        };
        Ok(Transport {
            state: Mutex::new(state),
            device,
            interrupt: AtomicU32::new(0),
            notify: EventFd::new(EFD_NONBLOCK)?,
            broken: AtomicBool::new(false),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A read of `data.len()` bytes at `offset` in the register page.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        if offset >= u64::from(VIRTIO_MMIO_CONFIG) {
            self.device.read_config(offset - u64::from(VIRTIO_MMIO_CONFIG), data);
            return;
        }
        data.fill(0);
        // The registers are 32 bits wide and read whole (4.2.2.2); anything else reads zero.
        let (Ok(reg), 4) = (u32::try_from(offset), data.len()) else { return };
        let v = match reg {
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt.load(Ordering::Acquire),
            VIRTIO_MMIO_DEVICE_ID => self.device.id(),
            VIRTIO_MMIO_DEVICE_FEATURES => match self.state().device_features_sel {
                0 => self.offered() as u32,
                1 => (self.offered() >> 32) as u32,
                _ => 0,
            },
            _ => self.state().read(reg),
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A write of `data` at `offset` in the register page.
    pub fn write(&self, offset: u64, data: &[u8]) {
        // Configuration space: nothing the devices here let the driver change.
        let (Ok(reg), Ok(bytes)) = (u32::try_from(offset), <[u8; 4]>::try_from(data)) else { return };
        let v = u32::from_le_bytes(bytes);
        match reg {
            VIRTIO_MMIO_QUEUE_NOTIFY => self.wake(),
            VIRTIO_MMIO_INTERRUPT_ACK => {
                self.interrupt.fetch_and(!v, Ordering::AcqRel);
            }
            VIRTIO_MMIO_STATUS if v == 0 => {
                self.state().reset();
                self.interrupt.store(0, Ordering::Release);
                self.broken.store(false, Ordering::Release);
            }
            _ => {
                if self.state().write(reg, v, self.offered()) {
                    // Requests queued before DRIVER_OK are served now.
                    self.wake();
                }
            }
        }
    }

    /// The features the device offers: its own and the transport's.
    fn offered(&self) -> u64 {
        self.device.features() | TRANSPORT_FEATURES
    }

    /// Wakes the device thread.
    fn wake(&self) {
        // A full counter only means the device thread has a wake-up waiting already.
        let _ = self.notify.write(1);
    }

    /// Serves the requests the driver queued, on the device's thread: takes them from the rings
    /// under the lock, does the device's work without it, and puts the results in the used
    /// rings under it again. Whether to interrupt the guest (`InterruptStatus` says why).
    pub fn work(&self, mem: &GuestMemoryMmap) -> bool {
        let (mut interrupt, mut more) = (false, false);
        for _ in 0..PASSES {
            let (batch, resets) = {
                let mut st = self.state();
                match st.take(mem) {
                    Ok(Some(batch)) => (batch, st.resets),
                    Ok(None) => break,
                    Err(()) => return self.broke(st),
                }
            };
            let done: Vec<(usize, u16, u32)> =
                batch.into_iter().map(|(q, chain)| (q, chain.head_index(), self.device.handle(q, chain, mem))).collect();
            let mut st = self.state();
            if st.resets != resets {
                return false; // the driver reset the device meanwhile: nobody waits for these
            }
            match st.complete(&done, mem) {
                Ok((notify, again)) => (interrupt, more) = (interrupt | notify, again),
                Err(()) => return self.broke(st),
            }
            if !more {
                break;
            }
        }
        if more {
            self.wake(); // the rings still hold requests: back to them after the interrupt
        }
        if interrupt {
            self.interrupt.fetch_or(VIRTIO_MMIO_INT_VRING, Ordering::AcqRel);
        }
        interrupt
    }

    /// The driver broke a queue (`st` locked): the device needs a reset (2.1.2), and stops; a
    /// driver that does not reset it sees its requests hang, as on hardware.
    fn broke(&self, mut st: MutexGuard<'_, State>) -> bool {
        st.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        drop(st);
        if !self.broken.swap(true, Ordering::AcqRel) {
            eprintln!("rvmx: {}: a queue lies outside guest memory or is corrupt: the device needs a reset", self.device.name());
        }
        self.interrupt.fetch_or(VIRTIO_MMIO_INT_CONFIG, Ordering::AcqRel);
        true
    }
}

impl State {
    /// Whether the device serves requests: the driver said DRIVER_OK, and no reset is needed.
    fn live(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0 && self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0
    }

    /// Takes every request the driver made available; `Err` if a queue is broken (rings outside
    /// guest memory, an available index beyond the queue's size, an unreadable ring entry).
    fn take<'m>(&mut self, mem: &'m GuestMemoryMmap) -> Result<Option<Batch<'m>>, ()> {
        if !self.live() {
            return Ok(None);
        }
        let mut batch = Vec::new();
        for (i, q) in self.queues.iter_mut().enumerate().filter(|(_, q)| q.ready()) {
            if !q.is_valid(mem) {
                return Err(());
            }
            let pending = (q.avail_idx(mem, Ordering::Acquire).map_err(drop)? - Wrapping(q.next_avail())).0;
            let before = batch.len();
            batch.extend(q.iter(mem).map_err(drop)?.map(|chain| (i, chain)));
            if batch.len() - before < usize::from(pending) {
                return Err(());
            }
        }
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// Puts the results of served requests, `(queue, head, length written)`, in the used rings:
    /// whether the driver wants an interrupt, and whether more requests came meanwhile (the
    /// driver's next notification is asked for either way: event index or flags).
    fn complete(&mut self, done: &[(usize, u16, u32)], mem: &GuestMemoryMmap) -> Result<(bool, bool), ()> {
        let mut served = vec![false; self.queues.len()];
        for &(i, head, len) in done {
            self.queues[i].add_used(mem, head, len).map_err(drop)?;
            served[i] = true;
        }
        let (mut notify, mut more) = (false, false);
        for (q, _) in self.queues.iter_mut().zip(served).filter(|(_, served)| *served) {
            notify |= q.needs_notification(mem).map_err(drop)?;
            more |= q.enable_notification(mem).map_err(drop)?;
        }
        Ok((notify, more))
    }

    fn queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read(&mut self, reg: u32) -> u32 {
        match reg {
            VIRTIO_MMIO_MAGIC_VALUE => MAGIC,
            VIRTIO_MMIO_VERSION => VERSION,
            VIRTIO_MMIO_VENDOR_ID => VENDOR,
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.queue().map_or(0, |q| q.max_size().into()),
            VIRTIO_MMIO_QUEUE_READY => self.queue().map_or(0, |q| q.ready().into()),
            VIRTIO_MMIO_STATUS => self.status,
            // The configuration never changes while the driver reads it.
            VIRTIO_MMIO_CONFIG_GENERATION => 0,
            _ => 0,
        }
    }

    /// A register write other than a reset, the device offering `offered`; whether it set
    /// DRIVER_OK.
    fn write(&mut self, reg: u32, v: u32, offered: u64) -> bool {
        let negotiating = self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0;
        match reg {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES if negotiating => match self.driver_features_sel {
                0 => self.driver_features = self.driver_features & !0xffff_ffff | u64::from(v),
                1 => self.driver_features = self.driver_features & 0xffff_ffff | u64::from(v) << 32,
                _ => {}
            },
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_STATUS => return self.set_status(v, offered),
            _ => self.write_queue(reg, v),
        }
        false
    }

    /// The queue registers: only while the queue is not live (4.2.3.2).
    fn write_queue(&mut self, reg: u32, v: u32) {
        let live = self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0;
        let Some(q) = self.queue() else { return };
        if q.ready() && reg != VIRTIO_MMIO_QUEUE_READY {
            return;
        }
        match reg {
            // virtio-queue ignores sizes that are not a power of two up to the maximum.
            VIRTIO_MMIO_QUEUE_NUM => q.set_size(u16::try_from(v).unwrap_or(0)),
            VIRTIO_MMIO_QUEUE_READY if !live => q.set_ready(v == 1),
            VIRTIO_MMIO_QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
            VIRTIO_MMIO_QUEUE_AVAIL_LOW => q.set_avail_ring_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH => q.set_avail_ring_address(None, Some(v)),
            VIRTIO_MMIO_QUEUE_USED_LOW => q.set_used_ring_address(Some(v), None),
            VIRTIO_MMIO_QUEUE_USED_HIGH => q.set_used_ring_address(None, Some(v)),
            _ => {}
        }
    }

    /// The driver's status bits: FEATURES_OK only for features the device offered, VERSION_1
    /// among them (a legacy driver is refused); a bit once set stays until a reset. Whether it
    /// set DRIVER_OK.
    fn set_status(&mut self, v: u32, offered: u64) -> bool {
        let mut new = v | self.status;
        let features_ok = new & !self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0;
        if features_ok {
            if self.driver_features & !offered != 0 || self.driver_features & 1 << VIRTIO_F_VERSION_1 == 0 {
                new &= !VIRTIO_CONFIG_S_FEATURES_OK;
            } else {
                let event_idx = self.driver_features & 1 << VIRTIO_RING_F_EVENT_IDX != 0;
                self.queues.iter_mut().for_each(|q| q.set_event_idx(event_idx));
            }
        }
        // DRIVER_OK only after FEATURES_OK (3.1.1).
        if new & VIRTIO_CONFIG_S_FEATURES_OK == 0 {
            new &= !VIRTIO_CONFIG_S_DRIVER_OK;
        }
        let started = new & !self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0;
        self.status = new;
        started
    }

    fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.queues.iter_mut().for_each(|q| q.reset());
        self.resets += 1;
    }
}

#[cfg(test)]
mod tests {
    use vm_memory::{Bytes, GuestAddress};

    use super::*;
    use crate::devices::virtio::rng::Rng;

    const DESC: u64 = 0x1000;
    const AVAIL: u64 = 0x2000;
    const USED: u64 = 0x3000;
    const BUF: u64 = 0x4000;

    fn read(t: &Transport, reg: u32) -> u32 {
        let mut d = [0u8; 4];
        t.read(reg.into(), &mut d);
        u32::from_le_bytes(d)
    }

    fn write(t: &Transport, reg: u32, v: u32) {
        t.write(reg.into(), &v.to_le_bytes());
    }

    /// A driver's feature negotiation (3.1.1, steps 1-5) with `features`, and queue 0's size.
    fn negotiate(t: &Transport, features: u64) {
        write(t, VIRTIO_MMIO_STATUS, 1 | 2);
        write(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 0);
        write(t, VIRTIO_MMIO_DRIVER_FEATURES, features as u32);
        write(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, 1);
        write(t, VIRTIO_MMIO_DRIVER_FEATURES, (features >> 32) as u32);
        write(t, VIRTIO_MMIO_STATUS, 1 | 2 | VIRTIO_CONFIG_S_FEATURES_OK);
        write(t, VIRTIO_MMIO_QUEUE_SEL, 0);
        write(t, VIRTIO_MMIO_QUEUE_NUM, 16);
    }

    /// A driver's whole bring-up with `features`, the rings at DESC, AVAIL and USED: the status
    /// it ends with.
    fn bring_up(t: &Transport, features: u64) -> u32 {
        negotiate(t, features);
        for (reg, addr) in [(VIRTIO_MMIO_QUEUE_DESC_LOW, DESC), (VIRTIO_MMIO_QUEUE_AVAIL_LOW, AVAIL), (VIRTIO_MMIO_QUEUE_USED_LOW, USED)] {
            write(t, reg, addr as u32);
            write(t, reg + 4, 0);
        }
        write(t, VIRTIO_MMIO_QUEUE_READY, 1);
        write(t, VIRTIO_MMIO_STATUS, 1 | 2 | VIRTIO_CONFIG_S_FEATURES_OK | VIRTIO_CONFIG_S_DRIVER_OK);
        read(t, VIRTIO_MMIO_STATUS)
    }

    /// Guest memory with one 16-byte device-writable buffer queued at `buf`.
    fn memory_with_request(buf: u64) -> GuestMemoryMmap {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        // Descriptor 0: addr, len, flags WRITE, next.
        mem.write_obj(buf, GuestAddress(DESC)).unwrap();
        mem.write_obj(16u32, GuestAddress(DESC + 8)).unwrap();
        mem.write_obj(2u16, GuestAddress(DESC + 12)).unwrap();
        // Available ring: flags, idx 1, ring[0] = descriptor 0.
        mem.write_obj(1u16, GuestAddress(AVAIL + 2)).unwrap();
        mem.write_obj(0u16, GuestAddress(AVAIL + 4)).unwrap();
        mem
    }

    #[test]
    fn identifies_itself() {
        let t = Transport::new(Box::new(Rng)).unwrap();
        assert_eq!(read(&t, VIRTIO_MMIO_MAGIC_VALUE), MAGIC);
        assert_eq!(read(&t, VIRTIO_MMIO_VERSION), 2);
        assert_eq!(read(&t, VIRTIO_MMIO_DEVICE_ID), 4);
        write(&t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 1);
        assert_eq!(read(&t, VIRTIO_MMIO_DEVICE_FEATURES), 1, "VERSION_1");
        assert_eq!(read(&t, VIRTIO_MMIO_QUEUE_NUM_MAX), u32::from(QUEUE_MAX));
        write(&t, VIRTIO_MMIO_QUEUE_SEL, 1);
        assert_eq!(read(&t, VIRTIO_MMIO_QUEUE_NUM_MAX), 0, "no second queue");
        let mut narrow = [0xffu8; 2];
        t.read(0, &mut narrow);
        assert_eq!(narrow, [0, 0], "registers read whole");
    }

    #[test]
    fn serves_a_request_and_interrupts() {
        let t = Transport::new(Box::new(Rng)).unwrap();
        let mem = memory_with_request(BUF);
        assert!(!t.work(&mem), "nothing before DRIVER_OK");
        assert_eq!(bring_up(&t, 1 << VIRTIO_F_VERSION_1), 0xf);
        assert!(t.work(&mem));
        assert_eq!(read(&t, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_VRING);
        let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
        let (id, len): (u32, u32) = (mem.read_obj(GuestAddress(USED + 4)).unwrap(), mem.read_obj(GuestAddress(USED + 8)).unwrap());
        assert_eq!((used_idx, id, len), (1, 0, 16));
        let random: [u8; 16] = mem.read_obj(GuestAddress(BUF)).unwrap();
        assert_ne!(random, [0; 16]);
        write(&t, VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INT_VRING);
        assert_eq!(read(&t, VIRTIO_MMIO_INTERRUPT_STATUS), 0);
        assert!(!t.work(&mem), "nothing new");
        write(&t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!((read(&t, VIRTIO_MMIO_STATUS), read(&t, VIRTIO_MMIO_QUEUE_READY)), (0, 0), "reset");
    }

    #[test]
    fn refuses_features_it_did_not_offer_and_legacy_drivers() {
        let t = Transport::new(Box::new(Rng)).unwrap();
        assert_eq!(bring_up(&t, 1 << VIRTIO_F_VERSION_1 | 1 << 40), 1 | 2, "no FEATURES_OK, no DRIVER_OK");
        write(&t, VIRTIO_MMIO_STATUS, 0);
        assert_eq!(bring_up(&t, 0), 1 | 2, "legacy");
    }

    #[test]
    fn a_queue_outside_guest_memory_needs_a_reset() {
        let t = Transport::new(Box::new(Rng)).unwrap();
        let mem = memory_with_request(0xfff_0000); // the buffer: outside memory
        bring_up(&t, 1 << VIRTIO_F_VERSION_1);
        assert!(t.work(&mem));
        let used_idx: u16 = mem.read_obj(GuestAddress(USED + 2)).unwrap();
        assert_eq!(used_idx, 1, "answered with nothing written");
        let len: u32 = mem.read_obj(GuestAddress(USED + 8)).unwrap();
        assert_eq!(len, 0);
        // Rings outside memory: the device stops until the driver resets it.
        write(&t, VIRTIO_MMIO_STATUS, 0);
        negotiate(&t, 1 << VIRTIO_F_VERSION_1);
        write(&t, VIRTIO_MMIO_QUEUE_USED_LOW, 0xfff_f000);
        write(&t, VIRTIO_MMIO_QUEUE_READY, 1);
        write(&t, VIRTIO_MMIO_STATUS, 0xf);
        assert!(t.work(&mem));
        assert_ne!(read(&t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        assert_eq!(read(&t, VIRTIO_MMIO_INTERRUPT_STATUS), VIRTIO_MMIO_INT_CONFIG);
        assert!(!t.work(&mem), "stopped");
    }

    #[test]
    fn a_broken_ring_stops_the_device_at_once() {
        // An available index 100 ahead in a queue of 16.
        let t = Transport::new(Box::new(Rng)).unwrap();
        let mem = memory_with_request(BUF);
        mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
        bring_up(&t, 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX);
        assert!(t.work(&mem));
        assert_ne!(read(&t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
        // An available ring never placed (address 0): the same, not a loop.
        let t = Transport::new(Box::new(Rng)).unwrap();
        negotiate(&t, 1 << VIRTIO_F_VERSION_1);
        write(&t, VIRTIO_MMIO_QUEUE_READY, 1);
        write(&t, VIRTIO_MMIO_STATUS, 0xf);
        mem.write_obj(1u16, GuestAddress(2)).unwrap();
        assert!(t.work(&mem));
        assert_ne!(read(&t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET, 0);
    }

    #[test]
    fn event_index_asks_for_the_next_notification() {
        let t = Transport::new(Box::new(Rng)).unwrap();
        let mem = memory_with_request(BUF);
        bring_up(&t, 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_RING_F_EVENT_IDX);
        // used_event (after the avail ring's 16 entries) is 0: the driver wants this interrupt.
        assert!(t.work(&mem));
        // avail_event (after the used ring's 16 entries): notify when entry 1 is made available.
        let avail_event: u16 = mem.read_obj(GuestAddress(USED + 4 + 16 * 8)).unwrap();
        assert_eq!(avail_event, 1);
    }
}

