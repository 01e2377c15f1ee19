//! XDP attach, detach and query over rtnetlink (IFLA_XDP), as `ip link set xdp` does.
//!
//! Why not a pinned bpf_link: a netlink attachment is owned by the interface itself, so it
//! survives with no process and no pin, and the kernel on our reference machines refuses to
//! pin XDP links (BPF_OBJ_PIN: EPERM). Detach names the program it expects to remove
//! (XDP_FLAGS_REPLACE + IFLA_XDP_EXPECTED_FD), so floodgate never removes someone else's.

use std::{
    io,
    os::fd::{AsRawFd, BorrowedFd},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp, XdpAttached},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_REPLACE: u32 = 1 << 4;

/// XDP attach mode: as the user asks for it, and as an attachment has it (never `Auto`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum XdpMode {
    /// Native (driver) mode if the driver supports it, else generic (skb) mode.
    Auto,
    /// Native (driver) XDP: runs before the kernel allocates an skb.
    Native,
    /// Generic XDP: works on any interface, runs after skb allocation (slower).
    Skb,
}

impl XdpMode {
    pub fn name(self) -> &'static str {
        match self {
            XdpMode::Auto => "auto",
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }

    /// The mode's attach flag (none for `Auto`: the kernel picks).
    fn flag(self) -> u32 {
        match self {
            XdpMode::Auto => 0,
            XdpMode::Native => XDP_FLAGS_DRV_MODE,
            XdpMode::Skb => XDP_FLAGS_SKB_MODE,
        }
    }
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The XDP program on one interface of the caller's network namespace.
#[derive(Clone, Debug)]
pub struct XdpState {
    pub ifindex: u32,
    pub ifname: String,
    pub mode: XdpMode,
    pub prog_id: u32,
}

fn request(msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut out = Vec::new();
    let mut rx = vec![0u8; 1 << 16];
    loop {
        let size = socket.recv(&mut &mut rx[..], 0)?;
        let mut offset = 0;
        while offset < size {
            let reply: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[offset..size]).map_err(io::Error::other)?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    // An error message with code 0 is the ACK.
                    return if e.code.is_none() {
                        Ok(out)
                    } else {
                        Err(e.to_io())
                    };
                }
                NetlinkPayload::InnerMessage(m) => {
                    out.push(m);
                    if flags & NLM_F_DUMP == 0 && flags & NLM_F_ACK == 0 {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

/// Attach `prog` to `ifindex` in the given mode; fails with EBUSY if any XDP program is there.
pub fn attach(ifindex: u32, prog: BorrowedFd<'_>, mode: XdpMode) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(prog.as_raw_fd()),
        LinkXdp::Flags(XDP_FLAGS_UPDATE_IF_NOEXIST | mode.flag()),
    ]));
    request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK).map(drop)
}

/// Remove `expected` from `ifindex`; fails (EEXIST) if another program is attached there.
pub fn detach(ifindex: u32, expected: BorrowedFd<'_>, mode: XdpMode) -> io::Result<()> {
    let mut msg = LinkMessage::default();
    msg.header.index = ifindex;
    msg.attributes.push(LinkAttribute::Xdp(vec![
        LinkXdp::Fd(-1),
        LinkXdp::ExpectedFd(expected.as_raw_fd() as u32),
        LinkXdp::Flags(XDP_FLAGS_REPLACE | mode.flag()),
    ]));
    request(RouteNetlinkMessage::SetLink(msg), NLM_F_ACK).map(drop)
}

/// Every interface of this network namespace that has an XDP program in native or skb mode.
/// Offloaded (hw) programs and several programs at once (multi, which names no single
/// program) are left out: floodgate attaches neither, so none of them is its own.
pub fn xdp_interfaces() -> io::Result<Vec<XdpState>> {
    let replies = request(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        NLM_F_DUMP,
    )?;
    let mut out = Vec::new();
    for reply in replies {
        let RouteNetlinkMessage::NewLink(link) = reply else {
            continue;
        };
        let mut ifname = String::new();
        let mut mode = None;
        let mut prog_id = 0;
        for attr in &link.attributes {
            match attr {
                LinkAttribute::IfName(n) => ifname = n.clone(),
                LinkAttribute::Xdp(xdp) => {
                    for x in xdp {
                        match x {
                            LinkXdp::Attached(XdpAttached::Driver) => mode = Some(XdpMode::Native),
                            LinkXdp::Attached(XdpAttached::SocketBuffer) => {
                                mode = Some(XdpMode::Skb)
                            }
                            LinkXdp::ProgId(id) => prog_id = *id,
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(mode) = mode {
            out.push(XdpState {
                ifindex: link.header.index,
                ifname,
                mode,
                prog_id,
            });
        }
    }
    Ok(out)
}
