//! Dropping root (`user`, `group`): after every listener is bound, so ports
//! below 1024 work, and before any thread starts, so every thread runs as
//! the new identity.
//!
//! - `user` alone: that user, its primary group, and its supplementary
//!   groups from the group database (what `initgroups` sets, computed with
//!   `getgrouplist` so the result can be checked).
//! - `user` and `group`: that user, with `group` as primary group and in
//!   place of the primary one in the supplementary list.
//! - `group` alone: only the group changes; the supplementary groups become
//!   just that group, so none of root's stay.
//! - Names are looked up with `getpwnam_r`/`getgrnam_r`; a number that names
//!   no entry is taken as a numeric id.
//!
//! Order: `setgroups` → `setgid` → `setuid` (the first two need root). Then
//! the result is checked: real, effective and saved ids and the group list
//! are the asked ones, and after leaving uid 0 `setuid(0)` fails. Any
//! failure is an error naming the user or group and why; the caller must
//! not serve then, so the proxy never runs on as root by accident.
//!
//! Not started as root: asking for the identity the process already has is
//! fine (nothing to do); asking for another is an error.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io;

use log::info;

/// One user or group: its name (or the number it was given as) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    name: String,
    id: u32,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.id)
    }
}

/// A user from the user database, or a bare uid.
struct UserEntry {
    account: Account,
    /// Its primary group; `None` for a uid with no entry.
    gid: Option<u32>,
    /// Found in the database (so its group memberships can be looked up).
    known: bool,
}

/// Who the process becomes.
#[derive(Debug)]
struct Target {
    /// `None`: keep the uid (`group` alone).
    user: Option<Account>,
    group: Account,
    /// The supplementary groups, sorted.
    groups: Vec<u32>,
}

/// Becomes `user` and/or `group` (see the module notes); does nothing when
/// both are `None`. Logs the identity it runs as.
pub fn drop_privileges(user: Option<&str>, group: Option<&str>) -> Result<(), String> {
    if user.is_none() && group.is_none() {
        return Ok(());
    }
    let target = resolve(user, group)?;
    let wanted = describe(&target);
    // SAFETY: these getters cannot fail.
    let (uid, euid, gid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    if euid != 0 {
        let same_user = target
            .user
            .as_ref()
            .is_none_or(|u| u.id == uid && u.id == euid);
        let same_group = target.group.id == gid && target.group.id == egid;
        if same_user && same_group {
            info!("already running as {wanted}; nothing to change");
            return Ok(());
        }
        return Err(format!(
            "cannot switch to {wanted}: swiftiply was started as uid {euid}, not as root, and \
             only root may change its user or group; start it as root, or remove `user`/`group` \
             from the config"
        ));
    }
    apply(&target).map_err(|e| format!("cannot switch to {wanted}: {e}"))?;
    check(&target).map_err(|e| format!("after switching to {wanted}: {e}"))?;
    let now = match &target.user {
        Some(u) => u.clone(),
        None => current_user(),
    };
    info!(
        "running as user {} (uid {}), group {} (gid {})",
        now.name, now.id, target.group.name, target.group.id
    );
    Ok(())
}

fn describe(t: &Target) -> String {
    match &t.user {
        Some(u) => format!("user {u} and group {}", t.group),
        None => format!("group {}", t.group),
    }
}

fn resolve(user: Option<&str>, group: Option<&str>) -> Result<Target, String> {
    let user = user.map(lookup_user).transpose()?;
    let group = match (group, &user) {
        (Some(g), _) => lookup_group(g)?,
        (None, Some(u)) => {
            let gid = u.gid.ok_or_else(|| {
                format!(
                    "user {}: no entry in the user database, so its primary group is \
                     unknown; set `group` as well",
                    u.account.name
                )
            })?;
            group_by_id(gid).map_err(|e| format!("cannot look up group {gid}: {e}"))?
        }
        (None, None) => unreachable!("drop_privileges returns early without user or group"),
    };
    let mut groups = match &user {
        Some(u) if u.known => group_list(&u.account.name, group.id)
            .map_err(|e| format!("cannot look up the groups of user {}: {e}", u.account.name))?,
        _ => vec![group.id],
    };
    groups.sort_unstable();
    groups.dedup();
    Ok(Target {
        user: user.map(|u| u.account),
        group,
        groups,
    })
}

fn lookup_user(spec: &str) -> Result<UserEntry, String> {
    let failed = |e: io::Error| format!("cannot look up user {spec}: {e}");
    let name = CString::new(spec).map_err(|_| format!("user {spec:?}: contains a NUL byte"))?;
    // SAFETY: the buffers come from `passwd_query`; `name` is NUL-terminated.
    let by_name = passwd_query(|p, buf, len, res| unsafe {
        libc::getpwnam_r(name.as_ptr(), p, buf, len, res)
    })
    .map_err(failed)?;
    if let Some(found) = by_name {
        return Ok(found);
    }
    let Ok(uid) = spec.parse::<u32>() else {
        return Err(format!(
            "user {spec} does not exist (no such user in the user database)"
        ));
    };
    // SAFETY: as above.
    let by_id = passwd_query(|p, buf, len, res| unsafe { libc::getpwuid_r(uid, p, buf, len, res) })
        .map_err(failed)?;
    Ok(by_id.unwrap_or(UserEntry {
        account: Account {
            name: spec.to_string(),
            id: uid,
        },
        gid: None,
        known: false,
    }))
}

fn lookup_group(spec: &str) -> Result<Account, String> {
    let name = CString::new(spec).map_err(|_| format!("group {spec:?}: contains a NUL byte"))?;
    // SAFETY: the buffers come from `group_query`; `name` is NUL-terminated.
    let by_name = group_query(|g, buf, len, res| unsafe {
        libc::getgrnam_r(name.as_ptr(), g, buf, len, res)
    })
    .map_err(|e| format!("cannot look up group {spec}: {e}"))?;
    if let Some(found) = by_name {
        return Ok(found);
    }
    match spec.parse::<u32>() {
        Ok(gid) => group_by_id(gid).map_err(|e| format!("cannot look up group {spec}: {e}")),
        Err(_) => Err(format!(
            "group {spec} does not exist (no such group in the group database)"
        )),
    }
}

/// The group with `gid`, named by the database where it has an entry.
fn group_by_id(gid: u32) -> io::Result<Account> {
    // SAFETY: the buffers come from `group_query`.
    let found = group_query(|g, buf, len, res| unsafe { libc::getgrgid_r(gid, g, buf, len, res) })?;
    Ok(found.unwrap_or(Account {
        name: gid.to_string(),
        id: gid,
    }))
}

/// The user the process runs as, for the log line.
fn current_user() -> Account {
    // SAFETY: getuid cannot fail; the buffers come from `passwd_query`.
    let uid = unsafe { libc::getuid() };
    let found = passwd_query(|p, buf, len, res| unsafe { libc::getpwuid_r(uid, p, buf, len, res) });
    match found {
        Ok(Some(u)) => u.account,
        _ => Account {
            name: uid.to_string(),
            id: uid,
        },
    }
}

/// `user`'s groups with `gid` as its primary one, as `initgroups` would set.
fn group_list(user: &str, gid: u32) -> io::Result<Vec<u32>> {
    let name = CString::new(user).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut n = groups.len() as libc::c_int;
        // SAFETY: `groups` has room for `n` entries; getgrouplist writes at
        // most that many and sets `n` to the number it needs.
        let rc = unsafe { libc::getgrouplist(name.as_ptr(), gid, groups.as_mut_ptr(), &mut n) };
        if rc >= 0 {
            groups.truncate(n as usize);
            return Ok(groups);
        }
        if n as usize <= groups.len() {
            if groups.len() >= 65536 {
                return Err(io::Error::other("more than 65536 groups"));
            }
            n = (groups.len() * 2) as libc::c_int;
        }
        groups.resize(n as usize, 0);
    }
}

fn apply(t: &Target) -> io::Result<()> {
    // SAFETY: `groups` holds `len` gids; the calls only change this
    // process's credentials (there is one thread).
    unsafe {
        if libc::setgroups(t.groups.len(), t.groups.as_ptr()) == -1 {
            return Err(why("setgroups", t.groups.iter().map(|g| g.to_string())));
        }
        if libc::setgid(t.group.id) == -1 {
            return Err(why("setgid", [t.group.id.to_string()]));
        }
        if let Some(u) = &t.user {
            if libc::setuid(u.id) == -1 {
                return Err(why("setuid", [u.id.to_string()]));
            }
        }
    }
    Ok(())
}

/// `call(args): errno`, for an error message.
fn why(call: &str, args: impl IntoIterator<Item = String>) -> io::Error {
    let e = io::Error::last_os_error();
    let args: Vec<String> = args.into_iter().collect();
    io::Error::new(e.kind(), format!("{call}({}): {e}", args.join(", ")))
}

/// The credentials are exactly the target's, and root cannot come back.
fn check(t: &Target) -> Result<(), String> {
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: the three pointers are valid for writes.
    if unsafe { libc::getresuid(&mut r, &mut e, &mut s) } == -1 {
        return Err(format!("getresuid: {}", io::Error::last_os_error()));
    }
    let uids = [r, e, s];
    // SAFETY: as above.
    if unsafe { libc::getresgid(&mut r, &mut e, &mut s) } == -1 {
        return Err(format!("getresgid: {}", io::Error::last_os_error()));
    }
    let gids = [r, e, s];
    if let Some(u) = &t.user {
        if uids != [u.id; 3] {
            return Err(format!(
                "uids (real, effective, saved) are {uids:?}, not {}",
                u.id
            ));
        }
    }
    if gids != [t.group.id; 3] {
        return Err(format!(
            "gids (real, effective, saved) are {gids:?}, not {}",
            t.group.id
        ));
    }
    let mut groups = supplementary_groups().map_err(|e| format!("getgroups: {e}"))?;
    groups.sort_unstable();
    groups.dedup();
    if groups != t.groups {
        return Err(format!(
            "supplementary groups are {groups:?}, not {:?}",
            t.groups
        ));
    }
    if t.user.as_ref().is_some_and(|u| u.id != 0) {
        // SAFETY: an attempt that must fail; if it succeeds the caller stops
        // the process.
        if unsafe { libc::setuid(0) } == 0 {
            return Err("setuid(0) still succeeds: root could come back".into());
        }
    }
    Ok(())
}

fn supplementary_groups() -> io::Result<Vec<u32>> {
    // SAFETY: a size query (null buffer, 0) and then a buffer of that size.
    unsafe {
        let n = libc::getgroups(0, std::ptr::null_mut());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut groups = vec![0; n as usize];
        let n = libc::getgroups(n, groups.as_mut_ptr());
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        groups.truncate(n as usize);
        Ok(groups)
    }
}

/// Size of the string buffer handed to the `get*_r` functions; grown on
/// ERANGE up to `MAX_BUFFER`.
const START_BUFFER: usize = 1024;
const MAX_BUFFER: usize = 1 << 20;

/// Runs a `getpw*_r` call with a growing buffer. `Ok(None)`: no such entry.
fn passwd_query(
    mut call: impl FnMut(
        *mut libc::passwd,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::passwd,
    ) -> libc::c_int,
) -> io::Result<Option<UserEntry>> {
    let mut size = START_BUFFER;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: passwd is plain data, filled in by the call.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        let rc = call(&mut pwd, buf.as_mut_ptr(), size, &mut result);
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => {
                // SAFETY: on success pw_name points into `buf`, NUL-terminated.
                let name = unsafe { CStr::from_ptr(pwd.pw_name) };
                return Ok(Some(UserEntry {
                    account: Account {
                        name: name.to_string_lossy().into_owned(),
                        id: pwd.pw_uid,
                    },
                    gid: Some(pwd.pw_gid),
                    known: true,
                }));
            }
            libc::ERANGE if size < MAX_BUFFER => size *= 4,
            // Some implementations say "not found" with an error.
            libc::ENOENT | libc::ESRCH => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

/// Runs a `getgr*_r` call with a growing buffer. `Ok(None)`: no such entry.
fn group_query(
    mut call: impl FnMut(
        *mut libc::group,
        *mut libc::c_char,
        libc::size_t,
        *mut *mut libc::group,
    ) -> libc::c_int,
) -> io::Result<Option<Account>> {
    let mut size = START_BUFFER;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        // SAFETY: group is plain data, filled in by the call.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut result = std::ptr::null_mut();
        let rc = call(&mut grp, buf.as_mut_ptr(), size, &mut result);
        match rc {
            0 if result.is_null() => return Ok(None),
            0 => {
                // SAFETY: on success gr_name points into `buf`, NUL-terminated.
                let name = unsafe { CStr::from_ptr(grp.gr_name) };
                return Ok(Some(Account {
                    name: name.to_string_lossy().into_owned(),
                    id: grp.gr_gid,
                }));
            }
            libc::ERANGE if size < MAX_BUFFER => size *= 4,
            libc::ENOENT | libc::ESRCH => return Ok(None),
            e => return Err(io::Error::from_raw_os_error(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_to_uid_and_gid_0_by_name_and_by_number() {
        let t = resolve(Some("root"), None).unwrap();
        assert_eq!(t.user.as_ref().map(|u| u.id), Some(0));
        assert_eq!(t.group.id, 0);
        assert!(t.groups.contains(&0), "{t:?}");
        let t = resolve(Some("0"), Some("0")).unwrap();
        assert_eq!(t.user.unwrap().name, "root");
        assert_eq!(t.group.name, "root");
    }

    #[test]
    fn a_group_alone_keeps_the_user_and_is_the_only_group() {
        let t = resolve(None, Some("root")).unwrap();
        assert!(t.user.is_none());
        assert_eq!(t.groups, vec![0]);
    }

    #[test]
    fn unknown_names_are_errors_that_name_them() {
        let e = resolve(Some("no-such-user-xyz"), None).unwrap_err();
        assert!(e.contains("user no-such-user-xyz does not exist"), "{e}");
        let e = resolve(None, Some("no-such-group-xyz")).unwrap_err();
        assert!(e.contains("group no-such-group-xyz does not exist"), "{e}");
    }

    #[test]
    fn a_uid_without_an_entry_needs_a_group() {
        let e = resolve(Some("3999999"), None).unwrap_err();
        assert!(e.contains("set `group`"), "{e}");
        let t = resolve(Some("3999999"), Some("3999998")).unwrap();
        assert_eq!(t.user.unwrap().id, 3999999);
        assert_eq!(t.groups, vec![3999998]);
    }
}
