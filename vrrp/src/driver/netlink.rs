//! Virtual address add/remove through rtnetlink (the `ip address` of the
//! kernel's route netlink family).
//!
//! Adds use `NLM_F_REPLACE`, so adding an address that is already there
//! (a restart, or renewing its lifetime) is not an error. Removal looks the
//! address up on the interface first and deletes what it finds, so removing
//! an absent VIP (the common case for a backup at startup) is a no-op.
//!
//! Optional lifetime: an address added with a finite `valid_lft` disappears
//! by itself unless renewed. The master renews it while it advertises, so a
//! master killed with `kill -9` stops answering ARP for the VIP once the
//! lifetime runs out (keepalived leaves it forever; see
//! shared/vrrp-keepalived-wire.md).

use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, CacheInfo};
use rtnetlink::Handle;

use super::VirtualIp;

/// errno values that mean "already gone".
const EADDRNOTAVAIL: i32 = 99;
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;

/// A route-netlink connection (its task runs on the tokio runtime).
pub(super) struct Netlink {
    handle: Handle,
}

impl Netlink {
    pub(super) fn connect() -> std::io::Result<Self> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// Add (or refresh) `vip` on interface `ifindex`.
    pub(super) async fn add(
        &self,
        ifindex: u32,
        vip: &VirtualIp,
        lifetime: Option<Duration>,
    ) -> Result<(), rtnetlink::Error> {
        let mut req = self
            .handle
            .address()
            .add(ifindex, vip.addr, vip.prefix_len)
            .replace();
        if let Some(l) = lifetime {
            let secs = u32::try_from(l.as_secs().max(1)).unwrap_or(u32::MAX);
            let mut ci = CacheInfo::default();
            ci.ifa_valid = secs;
            ci.ifa_preferred = secs;
            req.message_mut()
                .attributes
                .push(AddressAttribute::CacheInfo(ci));
        }
        req.execute().await
    }

    /// Remove `vip` from interface `ifindex`; Ok(false) when it was absent.
    pub(super) async fn remove(
        &self,
        ifindex: u32,
        vip: &VirtualIp,
    ) -> Result<bool, rtnetlink::Error> {
        let found: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .set_address_filter(vip.addr)
            .execute()
            .try_collect()
            .await?;
        let mut removed = false;
        for msg in found {
            match self.handle.address().del(msg).execute().await {
                Ok(()) => removed = true,
                Err(rtnetlink::Error::NetlinkError(e))
                    if matches!(e.raw_code().abs(), EADDRNOTAVAIL | ENOENT | ENODEV) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
