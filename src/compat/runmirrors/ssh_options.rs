//! The ssh command-line options runmirrors passed through (runmirrors.conf `SSH_OPTS` and a
//! mirror line's `-…` options), sorted into what a pushmirror mirror file can say and what not.

/// One ssh option, as far as pushmirror is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SshOption {
    /// `-p N`, `-pN`, `-o Port=N`, `-oPort=N`.
    Port(u16),
    /// `-l USER`, `-lUSER`, `-o User=USER`.
    User(String),
    /// `-i FILE`, `-o IdentityFile=FILE`: a key ssh offers.
    Identity(String),
    /// `-b ADDRESS`, `-o BindAddress=ADDRESS`: the local address ssh connects from.
    BindAddress(String),
    /// What pushmirror always does anyway (`-2`, `BatchMode=yes`, `PasswordAuthentication=no`).
    Implied,
    /// No equivalent: the option as written and why.
    Unsupported {
        /// The option and its argument, as written.
        option: String,
        /// Why pushmirror cannot express it.
        why: &'static str,
    },
}

/// ssh(1) flags that take an argument, so that `-J host` is one option, not two.
const FLAGS_WITH_ARGUMENT: &str = "BbcDEeFIiJLlmOopQRSWw";

const HOST_KEYS: &str = "pushmirror always verifies host keys against its own known_hosts or a `host_key:` pin; \
     record them with `pushmirror hostkeys scan`";
const NO_EQUIVALENT: &str = "pushmirror has no setting for this ssh option";

/// Sorts `words` (already split on whitespace, as runmirrors' shell did) into options.
pub fn parse(words: &[&str]) -> Vec<SshOption> {
    let mut out = Vec::new();
    let mut rest = words.iter().copied();
    while let Some(word) = rest.next() {
        let Some(flag) = word.strip_prefix('-').and_then(|w| w.chars().next()) else {
            out.push(unsupported(word, "not an ssh option: ssh would have taken it as the remote command"));
            continue;
        };
        let attached = &word[1 + flag.len_utf8()..];
        let (written, argument) = if !FLAGS_WITH_ARGUMENT.contains(flag) {
            (word.to_string(), None)
        } else if attached.is_empty() {
            let next = rest.next();
            (next.map_or_else(|| word.to_string(), |a| format!("{word} {a}")), next)
        } else {
            (word.to_string(), Some(attached))
        };
        out.push(classify(written, word, flag, argument));
    }
    out
}

/// One flag (`word` as written, `written` with its argument) and its argument if it takes one.
fn classify(written: String, word: &str, flag: char, argument: Option<&str>) -> SshOption {
    match (flag, argument) {
        (_, None) if FLAGS_WITH_ARGUMENT.contains(flag) => {
            SshOption::Unsupported { option: written, why: "the option's argument is missing" }
        }
        ('2', _) if word == "-2" => SshOption::Implied,
        ('p', Some(port)) => port_option(&written, port),
        ('l', Some(user)) => SshOption::User(user.to_string()),
        ('o', Some(setting)) => config_option(&written, setting),
        ('i', Some(file)) => SshOption::Identity(file.to_string()),
        ('b', Some(address)) => SshOption::BindAddress(address.to_string()),
        ('1', _) => SshOption::Unsupported { option: written, why: "SSH protocol 1 is gone; pushmirror speaks SSH 2" },
        _ => SshOption::Unsupported { option: written, why: NO_EQUIVALENT },
    }
}

/// `-o Keyword=value` (ssh_config keywords are case-insensitive).
fn config_option(written: &str, setting: &str) -> SshOption {
    let (keyword, value) = setting.split_once('=').unwrap_or((setting, ""));
    match (keyword.to_ascii_lowercase().as_str(), value.to_ascii_lowercase().as_str()) {
        ("port", _) => port_option(written, value),
        ("user", user) if !user.is_empty() => SshOption::User(value.to_string()),
        ("batchmode", "yes") | ("passwordauthentication", "no") => SshOption::Implied,
        ("stricthostkeychecking" | "userknownhostsfile" | "globalknownhostsfile", _) => {
            SshOption::Unsupported { option: written.to_string(), why: HOST_KEYS }
        }
        ("identityfile", _) if !value.is_empty() => SshOption::Identity(value.to_string()),
        ("bindaddress", _) if !value.is_empty() => SshOption::BindAddress(value.to_string()),
        _ => SshOption::Unsupported { option: written.to_string(), why: NO_EQUIVALENT },
    }
}

fn port_option(written: &str, port: &str) -> SshOption {
    match port.parse::<u16>() {
        Ok(p) if p > 0 => SshOption::Port(p),
        _ => SshOption::Unsupported { option: written.to_string(), why: "not a port number" },
    }
}

fn unsupported(option: &str, why: &'static str) -> SshOption {
    SshOption::Unsupported { option: option.to_string(), why }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<SshOption> {
        parse(&s.split_whitespace().collect::<Vec<_>>())
    }

    #[test]
    fn every_spelling_of_port_and_user_is_understood() {
        for spelling in ["-p 2222", "-p2222", "-oPort=2222", "-o Port=2222", "-o port=2222"] {
            assert_eq!(words(spelling), [SshOption::Port(2222)], "{spelling}");
        }
        for spelling in ["-l mirror", "-lmirror", "-o User=mirror", "-oUser=mirror"] {
            assert_eq!(words(spelling), [SshOption::User("mirror".into())], "{spelling}");
        }
    }

    #[test]
    fn flags_keep_their_argument_and_unknown_ones_are_named_with_it() {
        let parsed = words("-2 -o BatchMode=yes -J jump.example -B eth1 -C -p");
        assert_eq!(parsed[0..2], [SshOption::Implied, SshOption::Implied]);
        let named: Vec<&str> = parsed[2..]
            .iter()
            .map(|o| match o {
                SshOption::Unsupported { option, .. } => option.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(named, ["-J jump.example", "-B eth1", "-C", "-p"]);
    }

    #[test]
    fn keys_and_bind_addresses_in_every_spelling() {
        for spelling in ["-i /k", "-i/k", "-o IdentityFile=/k", "-oidentityfile=/k"] {
            assert_eq!(words(spelling), [SshOption::Identity("/k".into())], "{spelling}");
        }
        for spelling in ["-b 192.0.2.7", "-b192.0.2.7", "-o BindAddress=192.0.2.7", "-obindaddress=192.0.2.7"] {
            assert_eq!(words(spelling), [SshOption::BindAddress("192.0.2.7".into())], "{spelling}");
        }
    }
}
