//! Debian packages the dev loop installs on the host when missing (mmdebstrap to make the base
//! image, docker-registry for the registry tests, docker-compose v1 for the benchmark), by one
//! rule everywhere: as root with `apt-get`; otherwise through `sudo -n` when sudo works without
//! a password (hosted CI runners); otherwise an error that names the command to run.

use std::path::Path;

use anyhow::{bail, Context, Result};
use stigmer_stack::exec;
use stigmer_stack::ui::progress::Phase;

/// How packages can be installed here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    Root,
    /// Not root, and `sudo -n true` succeeds.
    PasswordlessSudo,
    None,
}

impl Privilege {
    /// Asks the system once: the user, then sudo.
    pub fn probe() -> Privilege {
        if stigmer_stack::runner::spec::HostUser::current().uid == 0 {
            return Privilege::Root;
        }
        if exec::succeeds("sudo", &["-n", "true"]) {
            Privilege::PasswordlessSudo
        } else {
            Privilege::None
        }
    }
}

/// The command line for `apt-get <args>` with this privilege, `None` when there is no way
/// (pure, for tests). `sudo` resets the environment, so the variable travels through `env`.
pub fn command(privilege: Privilege, args: &[&str]) -> Option<Vec<String>> {
    let prefix: &[&str] = match privilege {
        Privilege::Root => &[],
        Privilege::PasswordlessSudo => &["sudo", "-n"],
        Privilege::None => return None,
    };
    Some(
        prefix
            .iter()
            .chain(&["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"])
            .chain(args)
            .map(|word| word.to_string())
            .collect(),
    )
}

/// Installs `packages`, `needed_for` saying why in the error when it cannot be done.
pub fn install(packages: &[&str], needed_for: &str, phase: &Phase) -> Result<()> {
    let privilege = Privilege::probe();
    let mut install = vec!["install", "-y", "-qq", "--no-install-recommends"];
    install.extend(packages);
    let (Some(update), Some(install)) = (
        command(privilege, &["update", "-qq"]),
        command(privilege, &install),
    ) else {
        bail!(
            "{needed_for} needs {list}, which is not installed: run `sudo apt-get install {list}` \
             (Debian/Ubuntu), then this command again",
            list = packages.join(" ")
        );
    };
    phase.line(&format!("installing {} with apt-get", packages.join(" ")));
    for argv in [update, install] {
        let (program, args) = argv.split_first().context("a command has a program")?;
        // apt-get reads no file of ours, so any directory serves; `/` always exists. Its
        // output is shown as it comes: a slow mirror is visible.
        exec::run(program, args, Path::new("/"), &[])
            .with_context(|| format!("running `{}`", argv.join(" ")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_install() {
        assert_eq!(
            command(Privilege::Root, &["install", "-y", "mmdebstrap"]).unwrap(),
            [
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "mmdebstrap"
            ]
        );
        assert_eq!(
            command(Privilege::PasswordlessSudo, &["update", "-qq"]).unwrap(),
            [
                "sudo",
                "-n",
                "env",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "update",
                "-qq"
            ]
        );
        assert_eq!(command(Privilege::None, &["update"]), None);
    }
}
