//! Packet samples from the data plane (see `filter_common::sample`): switching sampling on and
//! off per reason, reading the `SAMPLES` ring buffer, and writing what it holds as pcapng with
//! each packet's verdict in its comment. `floodgate capture` is the front end.

use std::{borrow::Cow, io::Write, os::fd::AsRawFd, time::Duration};

use aya::maps::{Array, Map, MapData, PerCpuArray, RingBuf};
use filter_common::{
    CONFIG_MAGIC, Config, REASON_COUNT, REASONS, Reason, SAMPLE_BYTES_MAX, STATS_SLOTS, Sample,
    SampleHead, map_names, sample_flags,
};
use pcap_file::{
    DataLink,
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption},
            interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption},
        },
    },
};

use crate::{
    error::{Error, Result},
    loader::PinDir,
    sys::StateLock,
};

pub(crate) fn pinned(pin: &PinDir, name: &str) -> Result<MapData> {
    let path = pin.maps().join(name);
    if !path.exists() {
        return Err(Error::NoState {
            pin_dir: pin.root().to_path_buf(),
        });
    }
    MapData::from_pin(&path).map_err(|e| Error::Io {
        context: format!("opening {}", path.display()),
        source: std::io::Error::other(e),
    })
}

pub(crate) fn map_err(what: &str) -> impl Fn(aya::maps::MapError) -> Error + '_ {
    move |e| Error::Io {
        context: what.to_string(),
        source: std::io::Error::other(e),
    }
}

/// The sampling switches: a rate per `STATS` slot and the snap length.
pub struct Sampling {
    rates: Array<MapData, u32>,
    config: Array<MapData, Config>,
    lost: PerCpuArray<MapData, u64>,
}

/// What sampling was before a capture changed it, to put back.
#[derive(Clone, Debug)]
pub struct SamplingWas {
    rates: Vec<u32>,
    snaplen: u32,
}

impl Sampling {
    pub fn open(pin: &PinDir) -> Result<Sampling> {
        let array = |name| -> Result<Map> { Ok(Map::Array(pinned(pin, name)?)) };
        Ok(Sampling {
            rates: Array::try_from(array(map_names::SAMPLE_RATES)?)
                .map_err(map_err("opening SAMPLE_RATES"))?,
            config: Array::try_from(array(map_names::CONFIG)?)
                .map_err(map_err("opening CONFIG"))?,
            lost: PerCpuArray::try_from(Map::PerCpuArray(pinned(pin, map_names::SAMPLE_LOST)?))
                .map_err(map_err("opening SAMPLE_LOST"))?,
        })
    }

    /// The rate of every `STATS` slot (0: not sampled).
    pub fn rates(&self) -> Result<Vec<u32>> {
        (0..STATS_SLOTS as u32)
            .map(|slot| {
                self.rates
                    .get(&slot, 0)
                    .map_err(map_err("reading SAMPLE_RATES"))
            })
            .collect()
    }

    /// Sample 1 in `rate` packets of `slots` (others as they were), `snaplen` bytes of each
    /// (None: as it was). Returns what to put back with [`Sampling::restore`]. Under the state
    /// lock, so that a settings write beside it does not lose the switch.
    pub fn enable(
        &mut self,
        pin: &PinDir,
        slots: &[u32],
        rate: u32,
        snaplen: Option<u32>,
    ) -> Result<SamplingWas> {
        let _lock = StateLock::acquire(pin.root())?;
        self.enable_locked(slots, rate, snaplen)
    }

    /// [`Sampling::enable`] for a caller that holds the state lock already.
    pub fn enable_locked(
        &mut self,
        slots: &[u32],
        rate: u32,
        snaplen: Option<u32>,
    ) -> Result<SamplingWas> {
        let was = SamplingWas {
            rates: self.rates()?,
            snaplen: self.config()?.sample_snaplen,
        };
        let mut rates = was.rates.clone();
        for &slot in slots {
            rates[slot as usize] = rate;
        }
        self.write(&rates, snaplen.unwrap_or(was.snaplen))?;
        Ok(was)
    }

    /// Put sampling back as it was before [`Sampling::enable`].
    pub fn restore(&mut self, pin: &PinDir, was: &SamplingWas) -> Result<()> {
        let _lock = StateLock::acquire(pin.root())?;
        self.restore_locked(was)
    }

    /// [`Sampling::restore`] for a caller that holds the state lock already.
    pub fn restore_locked(&mut self, was: &SamplingWas) -> Result<()> {
        self.write(&was.rates, was.snaplen)
    }

    fn config(&self) -> Result<Config> {
        self.config.get(&0, 0).map_err(map_err("reading CONFIG"))
    }

    fn write(&mut self, rates: &[u32], snaplen: u32) -> Result<()> {
        let have = self.rates()?;
        for (slot, (&r, &h)) in rates.iter().zip(&have).enumerate() {
            if r != h {
                self.rates
                    .set(slot as u32, r, 0)
                    .map_err(map_err("writing SAMPLE_RATES"))?;
            }
        }
        let mut cfg = self.config()?;
        if cfg.magic != CONFIG_MAGIC {
            // Maps nobody configured yet: the data plane runs with every defence off; leave
            // them so (a zero magic is what says "not configured").
            cfg = Config::initial();
        }
        cfg.sample = u32::from(rates.iter().any(|&r| r != 0));
        cfg.sample_snaplen = snaplen;
        self.config
            .set(0, cfg, 0)
            .map_err(map_err("writing CONFIG"))
    }

    /// Samples lost (ring full) so far, summed over `slots` and CPUs.
    pub fn lost(&self, slots: &[u32]) -> Result<u64> {
        let mut n = 0;
        for &slot in slots {
            let v = self
                .lost
                .get(&slot, 0)
                .map_err(map_err("reading SAMPLE_LOST"))?;
            n += v.iter().sum::<u64>();
        }
        Ok(n)
    }
}

/// The `STATS` slots (reason, enforced or dry-run) a capture of `reasons` (all if empty) with
/// verdict `verdict` (any if None) samples. A dry-run match passes: its verdict is "pass".
pub fn slots_for(reasons: &[Reason], verdict: Option<filter_common::Action>) -> Vec<u32> {
    let mut out = Vec::new();
    for r in REASONS {
        if !reasons.is_empty() && !reasons.contains(&r) {
            continue;
        }
        let enforced = r.action();
        if verdict.is_none_or(|v| v == enforced) {
            out.push(filter_common::stats_slot(r, false));
        }
        // The dry-run row holds drop and tx reasons that passed.
        if enforced != filter_common::Action::Pass
            && verdict.is_none_or(|v| v == filter_common::Action::Pass)
        {
            out.push(filter_common::stats_slot(r, true));
        }
    }
    out
}

/// One sample as read from the ring.
#[derive(Clone, Debug)]
pub struct Record {
    pub head: SampleHead,
    pub data: Vec<u8>,
}

impl Record {
    pub fn reason(&self) -> Reason {
        REASONS[self.head.reason as usize % REASON_COUNT]
    }
    pub fn dry_run(&self) -> bool {
        self.head.flags & sample_flags::DRY_RUN != 0
    }
    /// The verdict as the user sees it: `drop`, `pass`, `tx`, or `dry-run` (matched, passed).
    pub fn verdict(&self) -> &'static str {
        if self.dry_run() {
            "dry-run"
        } else {
            self.reason().action().name()
        }
    }
    /// The rule id of a rule's verdict, if this is one.
    pub fn rule(&self) -> Option<u32> {
        matches!(self.reason(), Reason::Rule | Reason::RuleLimit).then_some(self.head.detail)
    }

    /// The list source id of a blocklist drop, if this is one.
    pub fn list_source(&self) -> Option<u32> {
        (self.reason() == Reason::Blocklist).then_some(self.head.detail)
    }

    /// What decided, in words: ` rule 3`, ` source spamhaus`, or nothing.
    pub fn decided_by(&self, source_name: &dyn Fn(u32) -> Option<String>) -> String {
        if let Some(id) = self.rule() {
            return format!(" rule {id}");
        }
        if let Some(id) = self.list_source() {
            return format!(
                " source {}",
                source_name(id).unwrap_or_else(|| format!("#{id}"))
            );
        }
        String::new()
    }

    /// The pcapng comment: what floodgate decided (`by`: [`Record::decided_by`]).
    pub fn comment(&self, ifname: &str, by: &str) -> String {
        let rate = if self.head.rate > 1 {
            format!(", sampled 1 in {}", self.head.rate)
        } else {
            String::new()
        };
        format!(
            "floodgate: {} {}{by} (in {ifname}{rate})",
            self.verdict(),
            self.reason().name()
        )
    }
}

/// The `SAMPLES` ring buffer, read by one process at a time.
pub struct Reader {
    ring: RingBuf<MapData>,
}

impl Reader {
    pub fn open(pin: &PinDir) -> Result<Reader> {
        Reader::open_ring(pin, map_names::SAMPLES)
    }

    /// A reader of another ring of sample records (`AUTO_SAMPLES`).
    pub fn open_ring(pin: &PinDir, name: &str) -> Result<Reader> {
        let ring = RingBuf::try_from(Map::RingBuf(pinned(pin, name)?))
            .map_err(|e| map_err(&format!("opening {name}"))(e))?;
        Ok(Reader { ring })
    }

    /// Every record waiting, after waiting up to `wait` for the first.
    pub fn read(&mut self, wait: Duration) -> Vec<Record> {
        let mut out = Vec::new();
        self.drain(&mut out);
        if out.is_empty() {
            let mut pfd = libc::pollfd {
                fd: self.ring.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; a timeout in ms.
            unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) };
            self.drain(&mut out);
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<Record>) {
        while let Some(item) = self.ring.next() {
            if item.len() < size_of::<Sample>() {
                continue;
            }
            // SAFETY: a record the data plane wrote: a repr(C) Sample of plain integers.
            let s: Sample = unsafe { std::ptr::read_unaligned(item.as_ptr().cast()) };
            let n = (s.head.cap_len as usize).min(SAMPLE_BYTES_MAX);
            out.push(Record {
                head: s.head,
                data: s.data[..n].to_vec(),
            });
        }
    }
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC now: adds to a sample's monotonic time to give wall time.
pub fn wall_offset() -> Duration {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid timespec to fill.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
    };
    now(libc::CLOCK_REALTIME).saturating_sub(now(libc::CLOCK_MONOTONIC))
}

/// A pcapng file being written: one interface block (Ethernet, nanosecond times), then one
/// enhanced packet block per sample with the verdict as its comment.
pub struct PcapNg<W: Write> {
    writer: PcapNgWriter<W>,
    offset: Duration,
}

impl<W: Write> PcapNg<W> {
    pub fn new(out: W, snaplen: u32) -> Result<PcapNg<W>> {
        let io = |e: pcap_file::PcapError| Error::Io {
            context: "writing pcapng".into(),
            source: std::io::Error::other(e),
        };
        let mut writer = PcapNgWriter::new(out).map_err(io)?;
        writer
            .write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed("floodgate")),
                    InterfaceDescriptionOption::IfTsResol(9),
                ],
            })
            .map_err(io)?;
        Ok(PcapNg {
            writer,
            offset: wall_offset(),
        })
    }

    pub fn write(&mut self, r: &Record, ifname: &str, by: &str) -> Result<()> {
        let block = EnhancedPacketBlock {
            interface_id: 0,
            timestamp: self.offset + Duration::from_nanos(r.head.time_ns),
            original_len: r.head.frame_len,
            data: Cow::Borrowed(&r.data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(
                r.comment(ifname, by),
            ))],
        };
        self.writer
            .write_pcapng_block(block)
            .map_err(|e| Error::Io {
                context: "writing pcapng".into(),
                source: std::io::Error::other(e),
            })?;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.writer.get_mut().flush().map_err(|source| Error::Io {
            context: "writing pcapng".into(),
            source,
        })
    }
}

/// Name of interface `ifindex` in this namespace, or its number.
pub fn ifname(ifindex: u32) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname needs.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return format!("if{ifindex}");
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// A one-line summary of a sample for the terminal: time (UTC), verdict, reason, interface,
/// addresses, ports, protocol, length. `offset` is [`wall_offset`] at the capture's start.
pub fn summary(r: &Record, ifname: &str, by: &str, offset: Duration) -> String {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let mut what = String::new();
    if let Ok(p) = SlicedPacket::from_ethernet(&r.data) {
        let (src, dst) = match &p.net {
            Some(NetSlice::Ipv4(ip)) => (
                ip.header().source_addr().to_string(),
                ip.header().destination_addr().to_string(),
            ),
            Some(NetSlice::Ipv6(ip)) => (
                format!("[{}]", ip.header().source_addr()),
                format!("[{}]", ip.header().destination_addr()),
            ),
            _ => (String::new(), String::new()),
        };
        what = match &p.transport {
            Some(TransportSlice::Udp(u)) => format!(
                "{src}:{} > {dst}:{} udp",
                u.source_port(),
                u.destination_port()
            ),
            Some(TransportSlice::Tcp(t)) => format!(
                "{src}:{} > {dst}:{} tcp{}{}{}",
                t.source_port(),
                t.destination_port(),
                if t.syn() { " S" } else { "" },
                if t.ack() { " ." } else { "" },
                if t.rst() { " R" } else { "" }
            ),
            Some(TransportSlice::Icmpv4(_)) => format!("{src} > {dst} icmp"),
            Some(TransportSlice::Icmpv6(_)) => format!("{src} > {dst} icmpv6"),
            _ if !src.is_empty() => format!("{src} > {dst}"),
            _ => "not IP".into(),
        };
    }
    let wall = offset + Duration::from_nanos(r.head.time_ns);
    let day = wall.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06} {:>7} {:<12} {ifname} {what} len {}{by}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        wall.subsec_micros(),
        r.verdict(),
        r.reason().name(),
        r.head.frame_len
    )
}

/// A tcpdump-style filter compiled by libpcap, run on each sample's bytes.
pub struct Filter(pcap::BpfProgram);

impl Filter {
    pub fn compile(expr: &str) -> Result<Filter> {
        let bad = |e: pcap::Error| Error::Io {
            context: format!("filter expression `{}`", crate::entry::quote(expr)),
            source: std::io::Error::other(e.to_string()),
        };
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(bad)?;
        Ok(Filter(dead.compile(expr, true).map_err(bad)?))
    }

    pub fn matches(&self, r: &Record) -> bool {
        self.0.filter(&r.data)
    }
}
