//! Key management through the real binary: passphrases and key files added, listed, removed
//! and changed; the paper key exported and used to recover a repository whose every key object
//! is gone; and secrets never taken from an argument's value.

use crate::util::*;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SECOND: &str = "a second, different passphrase";

/// `key list --json`: one object per key object.
#[track_caller]
fn keys(v: &Vault, secret: &[&str]) -> Vec<Value> {
    let mut args = vec!["key", "list", "--json"];
    args.extend_from_slice(secret);
    match with_secret(v, &args).ok().json() {
        Value::Array(rows) => rows,
        other => panic!("key list --json should print an array, got {other}"),
    }
}

/// Runs `args`; unless they name a --password-file or --key-file, with the test passphrase
/// in BLOCKVAULT_PASSWORD (as every other test), else with it removed.
fn with_secret(v: &Vault, args: &[&str]) -> Run {
    let mut c = v.cmd(args);
    if args
        .iter()
        .any(|a| *a == "--password-file" || *a == "--key-file")
    {
        c.env_remove("BLOCKVAULT_PASSWORD");
    }
    run(&mut c, None)
}

/// A file holding one passphrase line.
fn password_file(v: &Vault, name: &str, pass: &str) -> PathBuf {
    let p = v.path(name);
    fs::write(&p, format!("{pass}\n")).unwrap();
    p
}

fn ids(rows: &[Value]) -> Vec<String> {
    rows.iter().map(|r| text(r, "id").to_string()).collect()
}

fn in_use(rows: &[Value]) -> String {
    let used: Vec<&Value> = rows.iter().filter(|r| r["in_use"] == true).collect();
    assert_eq!(
        used.len(),
        1,
        "exactly one key opened the repository: {rows:?}"
    );
    text(used[0], "id").to_string()
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A second passphrase opens the same repository (the master key is shared): a backup made
/// with one restores bit-exact with the other; once the first is removed it no longer opens
/// the repository (exit 4) and the second still does.
#[test]
fn added_passphrase_opens_the_repository_and_removed_one_does_not() {
    let v = Vault::new();
    let first = in_use(&keys(&v, &[]));
    let p2 = password_file(&v, "second.pass", SECOND);
    let added = v
        .run(&["key", "add", "--json", "--new-password-file", s(&p2)])
        .ok()
        .json();
    let second = text(&added, "added").to_string();
    assert_eq!(text(&added, "kind"), "passphrase");
    assert_ne!(first, second);

    let src = v.path("src.img");
    write_random_file(&src, 61, 9 * MIB);
    v.backup("disk", &[s(&src)]);
    let out = v.path("restored.img");
    with_secret(
        &v,
        &[
            "restore",
            "--name",
            "disk",
            s(&out),
            "--password-file",
            s(&p2),
        ],
    )
    .ok();
    assert_same_contents(&src, &out);

    // Listed: both, each a passphrase with its host and time; the one in use is the one given.
    let rows = keys(&v, &["--password-file", s(&p2)]);
    let mut listed = ids(&rows);
    listed.sort();
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    assert_eq!(listed, expected);
    assert_eq!(in_use(&rows), second);
    for r in &rows {
        assert_eq!(text(r, "kind"), "passphrase", "{r}");
        assert_utc_rfc3339(text(r, "created"));
        assert!(!text(r, "host").is_empty(), "{r}");
        assert_eq!(n(&r["argon2"], "memory_kib"), 64 * 1024, "{r}");
        // Four lanes, computed in parallel: half the wait of one lane on two cores.
        assert_eq!(n(&r["argon2"], "lanes"), 4, "{r}");
    }
    assert_eq!(in_use(&keys(&v, &[])), first);
    let table = v.run(&["key", "list"]).ok().stdout_text();
    assert!(
        table.contains(&format!("*  {first}")) && table.contains(&format!("   {second}")),
        "{table}"
    );

    // Remove the first (opened with the second, so it is not the one in use).
    let r = with_secret(
        &v,
        &["key", "remove", "--id", &first, "--password-file", s(&p2)],
    )
    .ok();
    assert!(r.stdout_text().contains(&first), "{}", r.stdout_text());
    v.run(&["list"])
        .error(4, &["wrong passphrase or key file", s(&v.repo)]);
    assert_eq!(ids(&keys(&v, &["--password-file", s(&p2)])), [second]);
    fs::remove_file(&out).unwrap();
    with_secret(
        &v,
        &[
            "restore",
            "--name",
            "disk",
            s(&out),
            "--password-file",
            s(&p2),
        ],
    )
    .ok();
    assert_same_contents(&src, &out);
}

/// `key change` (and its alias `passwd`): the new passphrase works, the old one stops
/// working, the data is untouched. The new passphrase here comes from BLOCKVAULT_NEW_PASSWORD.
#[test]
fn change_replaces_the_passphrase_in_use() {
    let v = Vault::new();
    let src = v.path("src.img");
    write_random_file(&src, 62, 5 * MIB);
    v.backup("disk", &[s(&src)]);
    let old = in_use(&keys(&v, &[]));

    let mut c = v.cmd(&["key", "change", "--json"]);
    c.env("BLOCKVAULT_NEW_PASSWORD", SECOND);
    let done = run(&mut c, None).ok().json();
    assert_eq!(done["removed"], serde_json::json!([old]));
    let new = text(&done, "added").to_string();

    v.run(&["list"]).error(4, &["wrong passphrase or key file"]);
    let p2 = password_file(&v, "second.pass", SECOND);
    let rows = keys(&v, &["--password-file", s(&p2)]);
    assert_eq!(ids(&rows), [new]);
    let out = v.path("restored.img");
    with_secret(
        &v,
        &[
            "restore",
            "--name",
            "disk",
            s(&out),
            "--password-file",
            s(&p2),
        ],
    )
    .ok();
    assert_same_contents(&src, &out);

    // Back again with the alias, from a file; a "change" to the same passphrase is refused.
    let p1 = password_file(&v, "first.pass", PASSWORD);
    with_secret(
        &v,
        &[
            "key",
            "passwd",
            "--password-file",
            s(&p2),
            "--new-password-file",
            s(&p2),
        ],
    )
    .error(1, &["new passphrase is the one that opens", s(&v.repo)]);
    with_secret(
        &v,
        &[
            "key",
            "passwd",
            "--password-file",
            s(&p2),
            "--new-password-file",
            s(&p1),
        ],
    )
    .ok();
    with_secret(&v, &["list", "--password-file", s(&p2)]).error(4, &["wrong passphrase"]);
    assert_eq!(keys(&v, &[]).len(), 1);
}

/// The last key cannot be removed (nothing would open the repository), nor the key in use
/// without --force (a typo must not lock the user out); a damaged key object does not count
/// as a key that opens anything.
#[test]
fn remove_refuses_the_last_key_and_the_key_in_use() {
    let v = Vault::new();
    let only = in_use(&keys(&v, &[]));
    v.run(&["key", "remove", "--id", &only, "--force"])
        .error(1, &[&only, "last key", "key add"]);
    v.run(&["key", "remove", "--id", "0123456789abcdef0123456789abcdef"])
        .error(1, &["no key 0123456789abcdef0123456789abcdef", &only]);
    v.run(&["key", "remove", "--id", &only[..8]])
        .error(1, &[&only[..8], "whole id"]);

    let p2 = password_file(&v, "second.pass", SECOND);
    let second = text(
        &v.run(&["key", "add", "--json", "--new-password-file", s(&p2)])
            .ok()
            .json(),
        "added",
    )
    .to_string();
    v.run(&["key", "remove", "--id", &only])
        .error(1, &[&only, "opened the repository", "--force"]);
    assert_eq!(keys(&v, &[]).len(), 2, "nothing was removed");

    // A damaged object under keys/ is listed as damaged, and is no reason to allow removing
    // the last key that decodes.
    fs::write(v.repo.join("keys").join("bogus"), b"not a key object").unwrap();
    let rows = keys(&v, &[]);
    let bogus = rows.iter().find(|r| r["id"] == "bogus").expect("listed");
    assert_eq!(text(bogus, "kind"), "damaged");
    assert!(!text(bogus, "damaged").is_empty());
    v.run(&["key", "remove", "--id", &only, "--force"]).ok();
    // Only the damaged object is left: damage (3), as it might have been this passphrase's.
    v.run(&["list"])
        .error(3, &["no key object", "keys/bogus", "is damaged"]);
    with_secret(
        &v,
        &[
            "key",
            "remove",
            "--id",
            &second,
            "--force",
            "--password-file",
            s(&p2),
        ],
    )
    .error(1, &[&second, "last readable key"]);
    with_secret(
        &v,
        &["key", "remove", "--id", "bogus", "--password-file", s(&p2)],
    )
    .ok();
    assert_eq!(ids(&keys(&v, &["--password-file", s(&p2)])), [second]);
}

/// `key add --new-key-file` creates the key file with mode 0600, and it opens the
/// repository; an existing key file of the user's own making is used as it is.
#[test]
fn new_key_file_is_private_and_opens_the_repository() {
    let v = Vault::new();
    let kf = v.path("vault.key");
    let r = v
        .run(&["key", "add", "--json", "--new-key-file", s(&kf)])
        .ok();
    assert!(r.stderr.contains("created key file"), "{}", r.stderr);
    assert_eq!(text(&r.json(), "kind"), "key_file");
    assert_eq!(mode(&kf), 0o600, "the new key file is private");
    let rows = keys(&v, &["--key-file", s(&kf)]);
    let used = rows.iter().find(|r| r["in_use"] == true).unwrap();
    assert_eq!(text(used, "kind"), "key_file");
    assert!(used.get("argon2").is_none(), "{used}");

    let own = v.path("own.key");
    fs::write(&own, random_bytes(63, 64)).unwrap();
    fs::set_permissions(&own, fs::Permissions::from_mode(0o600)).unwrap();
    with_secret(
        &v,
        &[
            "key",
            "add",
            "--key-file",
            s(&kf),
            "--new-key-file",
            s(&own),
        ],
    )
    .ok();
    assert_eq!(
        fs::read(&own).unwrap(),
        random_bytes(63, 64),
        "left as it was"
    );
    assert_eq!(keys(&v, &["--key-file", s(&own)]).len(), 3);
}

/// The paper key opens a repository whose every key object is gone: export it, delete
/// `keys/`, recover under a new passphrase, restore bit-exact. A mistyped paper key names the
/// line; one from another repository says so; nothing is added in either case.
#[test]
fn paper_key_recovers_a_repository_without_keys() {
    let v = Vault::new();
    let src = v.path("src.img");
    write_random_file(&src, 64, 9 * MIB);
    v.backup("disk", &[s(&src)]);

    let r = v.run(&["key", "export"]).ok();
    assert!(r.stderr.contains("master key"), "warned: {}", r.stderr);
    let paper = r.stdout_text();
    let body: Vec<&str> = paper.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(body.len(), 4, "{paper}");
    assert!(
        body[0].starts_with("blockvault-paper-key-v1 repository "),
        "{paper}"
    );
    assert!(
        body[1].starts_with("1: ") && body[2].starts_with("2: "),
        "{paper}"
    );
    assert!(body[3].starts_with("check: "), "{paper}");
    let file = v.path("paper.txt");
    fs::write(&file, &paper).unwrap();
    // --output: a new file, private.
    let out_file = v.path("paper-out.txt");
    v.run(&["key", "export", "--output", s(&out_file)]).ok();
    assert_eq!(mode(&out_file), 0o600);
    assert_eq!(
        fs::read_to_string(&out_file)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>(),
        body
    );
    v.run(&["key", "export", "--output", s(&out_file)])
        .error(1, &["paper key file", s(&out_file)]);

    // Every passphrase lost: no key object is left.
    for k in dir_names(&v.repo.join("keys")) {
        fs::remove_file(v.repo.join("keys").join(k)).unwrap();
    }
    v.run(&["list"]).error(1, &["holds no key", "key recover"]);

    // One character changed on a key line: refused, naming the line.
    let other = Vault::new();
    for (key_line, at) in [(1, 5), (2, 40)] {
        let mut lines: Vec<String> = paper.lines().map(str::to_string).collect();
        let i = lines
            .iter()
            .position(|l| l.starts_with(&format!("{key_line}: ")))
            .unwrap();
        let c = lines[i].as_bytes()[at] as char;
        assert!(c.is_ascii_hexdigit(), "{} at {at}", lines[i]);
        let d = if c == '7' { '8' } else { '7' };
        lines[i].replace_range(at..at + 1, &d.to_string());
        let bad = v.path("bad-paper.txt");
        fs::write(&bad, lines.join("\n")).unwrap();
        let mut c = v.cmd(&["key", "recover", "--paper", s(&bad)]);
        c.env("BLOCKVAULT_NEW_PASSWORD", SECOND);
        run(&mut c, None).error(
            1,
            &[
                s(&bad),
                &format!("key line {key_line} (line {})", i + 1),
                "mistyped",
            ],
        );
    }
    // A paper key from another repository: refused, naming both repository ids.
    let foreign = other.run(&["key", "export"]).ok().stdout_text();
    let mut c = v.cmd(&["key", "recover", "--paper", "-"]);
    c.env("BLOCKVAULT_NEW_PASSWORD", SECOND);
    run(&mut c, Some(foreign.into_bytes())).error(1, &["another repository", s(&v.repo)]);
    assert!(dir_names(&v.repo.join("keys")).is_empty(), "nothing added");

    // The right paper key, typed back from paper (standard input), under a new passphrase.
    let p2 = password_file(&v, "new.pass", SECOND);
    let mut c = v.cmd(&[
        "key",
        "recover",
        "--json",
        "--paper",
        "-",
        "--new-password-file",
        s(&p2),
    ]);
    c.env_remove("BLOCKVAULT_PASSWORD");
    let done = run(&mut c, Some(paper.clone().into_bytes())).ok().json();
    assert!(
        text(&done, "checked_against").starts_with("current/disk"),
        "the key was checked against the repository's data: {done}"
    );
    let out = v.path("restored.img");
    with_secret(
        &v,
        &[
            "restore",
            "--name",
            "disk",
            s(&out),
            "--password-file",
            s(&p2),
        ],
    )
    .ok();
    assert_same_contents(&src, &out);
    v.run(&["list"]).error(4, &["wrong passphrase"]);
    assert_eq!(
        ids(&keys(&v, &["--password-file", s(&p2)])),
        [text(&done, "added").to_string()]
    );
    // And from a file, a second time: another key object.
    let mut c = v.cmd(&["key", "recover", "--paper", s(&file)]);
    c.env("BLOCKVAULT_NEW_PASSWORD", PASSWORD);
    run(&mut c, None).ok();
    v.run(&["list"]).ok();
}

/// On an unencrypted repository every key command says there are no keys.
#[test]
fn unencrypted_repository_has_no_keys() {
    let v = Vault::with_init(&["--encryption", "none"]);
    let paper = v.path("paper.txt");
    fs::write(&paper, Vault::new().run(&["key", "export"]).ok().stdout).unwrap();
    let p2 = password_file(&v, "new.pass", SECOND);
    for args in [
        vec!["key", "list"],
        vec!["key", "add", "--new-password-file", s(&p2)],
        vec!["key", "remove", "--id", "00112233445566778899aabbccddeeff"],
        vec!["key", "change", "--new-password-file", s(&p2)],
        vec!["key", "export"],
        vec![
            "key",
            "recover",
            "--paper",
            s(&paper),
            "--new-password-file",
            s(&p2),
        ],
    ] {
        v.run(&args)
            .error(1, &["unencrypted", "no keys", s(&v.repo)]);
    }
    assert!(!v.repo.join("keys").exists() || dir_names(&v.repo.join("keys")).is_empty());
}

/// No command takes a secret as an argument's value: `--password` and `--new-password` do not
/// exist (clap exits 2), and every option of every command whose name speaks of a password,
/// passphrase, secret or key file takes a FILE. The new secret of `key add` comes from the
/// file or environment, and without either (and no terminal) it is an error, never a
/// default.
#[test]
fn secrets_are_never_taken_from_arguments() {
    let v = Vault::new();
    v.run(&["--password", PASSWORD, "list"]).code(2);
    v.run(&["key", "add", "--new-password", SECOND]).code(2);
    v.run(&["key", "add", "--password", PASSWORD]).code(2);
    v.run(&["init", "--passphrase", PASSWORD]).code(2);

    let mut commands: Vec<Vec<String>> = vec![vec![]];
    let mut checked = 0;
    let mut i = 0;
    while i < commands.len() {
        let mut args = commands[i].clone();
        args.push("--help".into());
        let help = run(Command::new(BIN).args(&args), None).ok().stdout_text();
        let mut in_commands = false;
        for line in help.lines() {
            if line.starts_with("Commands:") {
                in_commands = true;
                continue;
            }
            if in_commands {
                match line.split_whitespace().next() {
                    Some(sub) if line.starts_with("  ") && sub != "help" => {
                        let mut c = commands[i].clone();
                        c.push(sub.to_string());
                        commands.push(c);
                    }
                    Some(_) if line.starts_with("  ") => {}
                    _ => in_commands = false,
                }
            }
            // An option line: `  -q, --quiet  ...` or `      --password-file <FILE>  ...`.
            let words: Vec<&str> = line.split_whitespace().collect();
            if !words.first().is_some_and(|w| w.starts_with('-')) {
                continue;
            }
            let Some(j) = words.iter().position(|w| w.starts_with("--")) else {
                continue;
            };
            let name = words[j].trim_end_matches(',');
            let secretive = ["pass", "secret", "key-file", "paper"]
                .iter()
                .any(|s| name.contains(s));
            if secretive {
                let value = words.get(j + 1).copied().unwrap_or("");
                // A password command is not a secret: it names where the secret comes from.
                let command = name == "--password-command" && value == "<COMMAND>";
                assert!(
                    command || value == "<FILE>" || value == "<FILE|->",
                    "`blockvault {}` option {name} takes {value:?}, not a file",
                    commands[i].join(" ")
                );
                checked += 1;
            }
        }
        i += 1;
    }
    assert!(
        commands.iter().any(|c| c == &["key", "add"]) && commands.len() > 12,
        "every subcommand was looked at: {commands:?}"
    );
    // Each command shows at least the global --password-file and --key-file.
    assert!(
        checked >= 2 * commands.len(),
        "options looked at: {checked}"
    );

    // The new secret comes from the environment...
    let mut c = v.cmd(&["key", "add"]);
    c.env("BLOCKVAULT_NEW_PASSWORD", SECOND);
    run(&mut c, None).ok();
    let p2 = password_file(&v, "second.pass", SECOND);
    with_secret(&v, &["list", "--password-file", s(&p2)]).ok();
    // ...or from nowhere: no terminal to ask on is an error (setsid: no controlling terminal).
    require_tool("setsid");
    let mut c = Command::new("setsid");
    c.arg("-w")
        .arg(BIN)
        .args(["--repo", s(&v.repo), "key", "add"])
        .env("BLOCKVAULT_PASSWORD", PASSWORD)
        .env_remove("BLOCKVAULT_NEW_PASSWORD")
        .env_remove("BLOCKVAULT_REPO")
        .stdin(std::process::Stdio::null());
    run(&mut c, None).error(
        1,
        &[
            "no new passphrase",
            "BLOCKVAULT_NEW_PASSWORD",
            "--new-password-file",
        ],
    );
    assert_eq!(keys(&v, &[]).len(), 2, "nothing was added");
}

/// `--password-command`: the first line the command prints is the passphrase; a command that
/// fails, or prints a wrong one, is refused with its own message and exit code.
#[test]
fn the_passphrase_may_come_from_a_command() {
    let v = Vault::new();
    let with = |command: &str| {
        let mut c = v.cmd(&["--password-command", command, "list"]);
        c.env_remove("BLOCKVAULT_PASSWORD");
        run(&mut c, None)
    };
    with(&format!("printf '%s\\nsecond line\\n' '{PASSWORD}'")).ok();
    with("echo not the passphrase").error(4, &["wrong passphrase"]);
    with("exit 7").error(1, &["password command", "failed", "exit status: 7"]);
    with("true").error(1, &["printed no passphrase"]);

    // Standard input is the data of `backup -`, not the command's: one that reads it (ssh
    // without -n) used to eat the start of the backup, recorded with exit 0.
    let data = random_bytes(5, 3 * MIB as usize);
    let mut c = v.cmd(&[
        "--password-command",
        &format!("echo '{PASSWORD}'; cat > /dev/null"),
        "backup",
        "--name",
        "piped",
        "-",
    ]);
    c.env_remove("BLOCKVAULT_PASSWORD");
    run(&mut c, Some(data.clone())).ok();
    let out = v.run(&["restore", "--name", "piped", "-"]).ok();
    assert!(
        out.stdout == data,
        "the restored stream differs from what was piped in"
    );
}

/// Anyone who can write to `keys/` can plant a key object whose derivation asks Argon2 for the
/// most it may (4 GiB, 64 passes: minutes, and the memory). Keys are tried cheapest first, so
/// the right passphrase opens the repository with its own key before reaching the planted
/// one, whatever their names.
#[test]
fn a_planted_costly_key_is_not_tried_before_the_real_one() {
    use blockvault::format::key::{Kdf, KeyObject};
    use blockvault::format::{Kind, encode};
    let v = Vault::new();
    let name = "keys/00000000000000000000000000000000";
    let planted = KeyObject {
        kdf: Kdf::Argon2id {
            memory_kib: 4 * 1024 * 1024,
            passes: 64,
            lanes: 1,
            salt: [9; 16],
        },
        created: 0,
        host: "elsewhere".into(),
        nonce: [7; 24],
        sealed: vec![5; 48],
    };
    let bytes = blockvault::seal::seal(Kind::Key, None, name, &encode(&planted), None);
    fs::write(v.repo.join(name), bytes).unwrap();
    let started = std::time::Instant::now();
    let rows = keys(&v, &[]);
    assert_eq!(rows.len(), 2, "both key objects are listed: {rows:?}");
    assert_ne!(in_use(&rows), "00000000000000000000000000000000");
    let took = started.elapsed();
    assert!(
        took < std::time::Duration::from_secs(20),
        "opening took {took:?}: the planted key was derived first"
    );

    // A wrong passphrase does reach it, after the real key: the user is told what the wait
    // is and where the key may come from, before it starts.
    let mut c = v.cmd(&["list"]);
    c.env("BLOCKVAULT_PASSWORD", "not the passphrase")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(30));
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no notice within 30 s before deriving the planted key");
    for word in [
        name,
        "4096 MiB and 64 passes",
        "may take minutes",
        "planted",
    ] {
        assert!(line.contains(word), "{word:?} missing from: {line}");
    }
}
