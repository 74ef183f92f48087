//! Access policies that judge an identity or an address: `acl` (groups, scopes, methods) and
//! `ip_filter`.

use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderValue, Method};
use portico_config::{AclPolicy, IpFilterPolicy};

use crate::policy::auth::{AuthState, Denial, Identity};

pub fn acl(rt: &AuthState, a: &AclPolicy, method: &Method, id: &Identity) -> Result<(), Denial> {
    if !a.methods.is_empty() && !a.methods.contains(method) {
        return Ok(());
    }
    let groups: &[Arc<str>] = id
        .consumer
        .and_then(|c| rt.consumers.list.get(c))
        .map_or(&[], |c| &c.groups);
    let in_any = |list: &[String]| list.iter().any(|g| groups.iter().any(|h| **h == **g));
    if in_any(&a.deny) {
        return Err(Denial::Forbidden {
            reason: "group_denied",
            challenge: None,
        });
    }
    if !a.allow.is_empty() && !in_any(&a.allow) {
        return Err(Denial::Forbidden {
            reason: "group_not_allowed",
            challenge: None,
        });
    }
    if let Some(missing) = a.scopes.iter().find(|s| !id.scopes.contains(s)) {
        let _ = missing;
        // RFC 6750 §3.1: say which scope the resource needs (not which the token lacks).
        let challenge = HeaderValue::try_from(format!(
            "Bearer error=\"insufficient_scope\", scope=\"{}\"",
            a.scopes.join(" ")
        ))
        .ok();
        return Err(Denial::Forbidden {
            reason: "scope_missing",
            challenge,
        });
    }
    Ok(())
}

pub fn ip_filter(f: &IpFilterPolicy, ip: IpAddr) -> Result<(), Denial> {
    if f.deny.iter().any(|c| c.contains(ip))
        || (!f.allow.is_empty() && !f.allow.iter().any(|c| c.contains(ip)))
    {
        return Err(Denial::Forbidden {
            reason: "ip_denied",
            challenge: None,
        });
    }
    Ok(())
}
