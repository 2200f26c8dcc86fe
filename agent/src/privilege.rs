//! Who a job runs as. The state directory belongs to the units' user; recipe CI may run as a
//! user of its own (`[sweep] run_as`); root runs only the deploy and what an operator starts.
//! Root never acts as root in the state directory: a job started as root (an operator's `sudo
//! cc-ci-agent mirrors sync`) becomes the directory's owner before it does anything there
//! ([`become_account`]), and a child root starts for that user ([`crate::process::Cmd::user`])
//! switches before it runs. docs/reliability.md, "Who can write what".
//!
//! Accounts are read through the C library (`getpwnam_r`, `getpwuid_r`, `getgrouplist`), so
//! whatever the host's name service says (files, LDAP, NixOS's `/etc/passwd`) is what counts.

use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// A user as the system knows it: what a process needs to become it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Every group the user is in, its primary group first.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

impl Account {
    /// The user named `name`.
    pub fn by_name(name: &str) -> Result<Self, String> {
        let c_name = CString::new(name).map_err(|_| format!("{name:?} is not a user name"))?;
        lookup(|pwd, buf, found| unsafe {
            // SAFETY: every pointer is to a live value or buffer of the size given.
            libc::getpwnam_r(c_name.as_ptr(), pwd, buf.as_mut_ptr(), buf.len(), found)
        })?
        .ok_or_else(|| format!("there is no user {name:?} on this host"))
    }

    /// The user whose id is `uid`. An id with no name (a directory chowned to a bare number) is
    /// still a user a process can become: its primary group is then `gid`, and it has no other.
    pub fn by_uid(uid: u32, gid: u32) -> Result<Self, String> {
        let found = lookup(|pwd, buf, found| unsafe {
            // SAFETY: as in `by_name`.
            libc::getpwuid_r(uid, pwd, buf.as_mut_ptr(), buf.len(), found)
        })?;
        Ok(found.unwrap_or_else(|| Account {
            name: uid.to_string(),
            uid,
            gid,
            groups: vec![gid],
            home: PathBuf::from("/"),
        }))
    }
}

/// Calls a `getpw*_r` function with a buffer that grows until the entry fits.
fn lookup(
    call: impl Fn(*mut libc::passwd, &mut Vec<libc::c_char>, *mut *mut libc::passwd) -> libc::c_int,
) -> Result<Option<Account>, String> {
    let mut buf: Vec<libc::c_char> = vec![0; 1024];
    loop {
        // SAFETY: a zeroed passwd is a valid value of the plain C struct; it is only read after
        // the call filled it.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        match call(&mut pwd, &mut buf, &mut found) {
            0 if found.is_null() => return Ok(None),
            0 => return Ok(Some(account_of(&pwd)?)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            e => {
                return Err(format!(
                    "cannot read the user database: {}",
                    std::io::Error::from_raw_os_error(e)
                ))
            }
        }
    }
}

fn account_of(pwd: &libc::passwd) -> Result<Account, String> {
    // SAFETY: the C library filled these with NUL-terminated strings in the buffer, alive here.
    let (name, home) = unsafe { (CStr::from_ptr(pwd.pw_name), CStr::from_ptr(pwd.pw_dir)) };
    let name = name.to_string_lossy().into_owned();
    let groups = groups_of(&name, pwd.pw_gid)?;
    Ok(Account {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
        groups,
        home: PathBuf::from(home.to_string_lossy().into_owned()),
    })
}

/// Every group `name` is in, `primary` first (`getgrouplist`, as `initgroups` reads them).
fn groups_of(name: &str, primary: u32) -> Result<Vec<u32>, String> {
    let c_name = CString::new(name).map_err(|_| format!("{name:?} is not a user name"))?;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut n = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `groups` holds `n` entries; the call writes at most that many and sets `n`.
        let got =
            unsafe { libc::getgrouplist(c_name.as_ptr(), primary, groups.as_mut_ptr(), &mut n) };
        let n = usize::try_from(n).unwrap_or(0);
        if got >= 0 {
            groups.truncate(n);
            let mut out = vec![primary];
            out.extend(groups.into_iter().filter(|g| *g != primary));
            return Ok(out);
        }
        if n <= groups.len() || n > 1 << 16 {
            return Err(format!("cannot read the groups of {name:?}"));
        }
        groups.resize(n, 0);
    }
}

/// The owner and group of `dir` (the configured path, links in it followed), if it exists.
pub fn owner_of(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| (m.uid(), m.gid()))
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Makes this whole process `account`, for good: its groups, then its group, then its user
/// (real, effective and saved, so there is no way back), and `HOME`, `USER` and `LOGNAME` as a
/// login would set them (git reads its configuration from `HOME`). The C library's calls change
/// every thread of the process; the caller runs this before starting any.
pub fn become_account(account: &Account) -> Result<()> {
    let why = || {
        format!(
            "cannot become the user {} (uid {})",
            account.name, account.uid
        )
    };
    let groups: Vec<libc::gid_t> = account.groups.clone();
    // SAFETY: plain system calls with values, and a pointer to `groups` for its length.
    unsafe {
        if libc::setgroups(groups.len(), groups.as_ptr()) != 0
            || libc::setresgid(account.gid, account.gid, account.gid) != 0
            || libc::setresuid(account.uid, account.uid, account.uid) != 0
        {
            return Err(std::io::Error::last_os_error()).with_context(why);
        }
    }
    let (mut r, mut e, mut s) = (0, 0, 0);
    // SAFETY: three out-parameters of the right type.
    let read = unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
    anyhow::ensure!(
        read == 0 && [r, e, s] == [account.uid; 3],
        "{}: the switch did not take",
        why()
    );
    // Single-threaded still (see above): nothing reads the environment while it changes.
    std::env::set_var("HOME", &account.home);
    std::env::set_var("USER", &account.name);
    std::env::set_var("LOGNAME", &account.name);
    Ok(())
}

/// The switch to an account, made ready before a fork ([`ChildSwitch::of`]) and applied in the
/// child before exec ([`ChildSwitch::apply`]): the same as [`become_account`], by raw system
/// calls that allocate and lock nothing, as a child of a threaded process must.
pub(crate) struct ChildSwitch {
    groups: Vec<rustix::process::Gid>,
    uid: rustix::process::Uid,
    gid: rustix::process::Gid,
}

impl ChildSwitch {
    pub(crate) fn of(account: &Account) -> Self {
        use rustix::process::{Gid, Uid};
        Self {
            groups: account.groups.iter().map(|g| Gid::from_raw(*g)).collect(),
            uid: Uid::from_raw(account.uid),
            gid: Gid::from_raw(account.gid),
        }
    }

    pub(crate) fn apply(&self) -> std::io::Result<()> {
        use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
        set_thread_groups(&self.groups)?;
        set_thread_res_gid(self.gid, self.gid, self.gid)?;
        set_thread_res_uid(self.uid, self.uid, self.uid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_nobody_are_found_by_name_and_id() -> Result<(), String> {
        let root = Account::by_name("root")?;
        assert_eq!((root.uid, root.gid, root.groups[0]), (0, 0, 0));
        assert_eq!(Account::by_uid(0, 0)?.name, "root");
        let none = Account::by_uid(4_000_000, 4_000_001)?;
        assert_eq!(
            (none.name.as_str(), none.groups.as_slice()),
            ("4000000", &[4_000_001][..])
        );
        assert!(Account::by_name("no-such-user-of-cc-ci").is_err());
        Ok(())
    }
}
