//! Reloading the configuration while serving (`SIGHUP` to `consumer-host serve`).
//!
//! What can change without a restart is what is read per handshake or per
//! new connection; the rest is built once at start (listeners, the database,
//! the layer, the engine and its pools, the consumers):
//!
//! | key | on reload |
//! | --- | --- |
//! | `[limits]`, but `max_connections` and `max_message_bytes` | applied: handshakes from then on check the new values (per-user cap, origins, handshake timeout, URI length); connections opened from then on get the new rates, queues and ping/idle times; open connections keep theirs |
//! | `[[route]]` | applied when every route names a consumer the node runs; else none of the route changes is, and the log says which consumer is missing |
//! | everything else (`listen`, `[database]`, `[auth]`, `[layer]`, `[runtime]`, `[admin]`, `[demo]`, `[consumer.*]`, and the two limits above) | not applied: logged as needing a restart |
//!
//! A file that does not parse or validate changes nothing. Changes are found
//! by comparing the file's keys with those in force, so the log names them
//! as they are written (`limits.max_connections_per_user`); a key that could
//! not be applied is reported at every reload until the node restarts.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::node::Node;

/// `[limits]` keys read once at start: the node's connection slots are a
/// semaphore sized at start, and the message cap also sizes what consumers
/// may send (both need a restart).
pub const RESTART_ONLY_LIMITS: &[&str] = &["max_connections", "max_message_bytes"];

/// A key of the file: its path of table names, then its name.
pub type Key = Vec<String>;

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Keys whose new values are in force.
    pub applied: Vec<Key>,
    /// Keys whose new values are not, each with why.
    pub not_applied: Vec<(Key, String)>,
}

/// A key as the log shows it: `limits.max_connections_per_user`.
pub fn show(key: &[String]) -> String {
    key.join(".")
}

/// Every key whose value differs between two parsed files (added, removed
/// or changed), down to the leaves of tables; an array (`[[route]]`) is one
/// value.
pub fn changed_keys(old: &toml::Table, new: &toml::Table) -> Vec<Key> {
    let mut changed = Vec::new();
    diff(&mut Vec::new(), old, new, &mut changed);
    changed
}

fn diff(path: &mut Vec<String>, old: &toml::Table, new: &toml::Table, out: &mut Vec<Key>) {
    let mut names: Vec<&String> = old.keys().chain(new.keys()).collect();
    names.sort();
    names.dedup();
    let empty = toml::Table::new();
    for name in names {
        path.push(name.clone());
        // A table that appeared or went is compared key by key with an
        // empty one, so its keys are named one by one.
        match (old.get(name), new.get(name)) {
            (Some(toml::Value::Table(old)), Some(toml::Value::Table(new))) => {
                diff(path, old, new, out);
            }
            (Some(toml::Value::Table(old)), None) => diff(path, old, &empty, out),
            (None, Some(toml::Value::Table(new))) => diff(path, &empty, new, out),
            (old, new) if old != new => out.push(path.clone()),
            _ => {}
        }
        path.pop();
    }
}

/// Why a changed key cannot be applied while serving, if it cannot.
fn restart_reason(key: &[String]) -> Option<String> {
    match key {
        [section, name] if section == "limits" => RESTART_ONLY_LIMITS
            .contains(&name.as_str())
            .then(|| "read once at start: restart to apply it".to_string()),
        [route] if route == "route" => None,
        _ => Some("needs a restart".to_string()),
    }
}

/// Puts `new`'s reloadable part in force on `node`: its limits (but those
/// read once at start) and, when they changed and every one names a running
/// consumer, its routes. `changed` is what differs from the file in force.
pub fn apply(node: &Node, new: &Config, changed: &[Key]) -> Outcome {
    let mut outcome = Outcome::default();
    let mut routes = None;
    for key in changed {
        if let Some(why) = restart_reason(key) {
            outcome.not_applied.push((key.clone(), why));
        } else if key == &["route"] {
            match new_routes(node, new) {
                Ok(compiled) => {
                    routes = Some(compiled);
                    outcome.applied.push(key.clone());
                }
                Err(why) => outcome.not_applied.push((key.clone(), why)),
            }
        } else {
            outcome.applied.push(key.clone());
        }
    }
    let current = node.limits();
    let mut limits = new.limits.clone();
    limits.max_connections = current.max_connections;
    limits.max_message_bytes = current.max_message_bytes;
    node.swap_reloadable(limits, routes);
    outcome
}

/// The new routes compiled, or why they cannot serve.
fn new_routes(node: &Node, new: &Config) -> Result<Vec<crate::routing::Route>, String> {
    if let Some(route) = new
        .routes
        .iter()
        .find(|route| node.runtime.consumer(&route.consumer).is_none())
    {
        return Err(format!(
            "route {:?} names consumer {:?}, which this node does not run: adding a consumer \
             needs a restart (the routes in force are unchanged)",
            route.path, route.consumer
        ));
    }
    crate::routing::compile(&new.routes).map_err(|err| err.to_string())
}

/// Keeps the file as the node runs it, to tell what a reload changes.
pub struct Reloader {
    path: PathBuf,
    /// The file's keys in force: as read at start, then with each reload's
    /// applied changes (keys not applied keep their old values here).
    in_force: toml::Table,
}

impl Reloader {
    /// Reads the file the node was started with.
    pub fn new(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            path: path.to_path_buf(),
            in_force: read_table(path)?,
        })
    }

    /// Reads the file again and applies what may change while serving:
    /// `load` makes the [`Config`] from it as start-up did (flags and
    /// environment folded in), `apply` puts it in force (`Server::reload`).
    /// Logs what was applied and what was not; a file that does not load or
    /// validate changes nothing.
    pub fn reload(
        &mut self,
        load: impl FnOnce() -> anyhow::Result<Config>,
        apply: impl FnOnce(&Config, &[Key]) -> Outcome,
    ) -> Option<Outcome> {
        let path = self.path.display().to_string();
        let loaded = read_table(&self.path).and_then(|table| {
            let config = load()?;
            config.validate()?;
            Ok((table, config))
        });
        let (mut table, config) = match loaded {
            Ok(loaded) => loaded,
            Err(err) => {
                // One line: parse errors draw their position over several.
                let error = format!("{err:#}").replace('\n', " ");
                tracing::error!(file = %path, %error, "configuration not reloaded: nothing changed");
                return None;
            }
        };
        let changed = changed_keys(&self.in_force, &table);
        let outcome = apply(&config, &changed);
        for (key, why) in &outcome.not_applied {
            tracing::warn!(file = %path, key = %show(key), reason = %why, "configuration change not applied");
            restore(&mut table, key, lookup(&self.in_force, key).cloned());
        }
        let mut applied: Vec<String> = outcome.applied.iter().map(|key| show(key)).collect();
        if applied.is_empty() {
            applied.push("nothing".into());
        }
        tracing::info!(
            file = %path,
            applied = %applied.join(", "),
            not_applied = outcome.not_applied.len(),
            "configuration reloaded"
        );
        self.in_force = table;
        Some(outcome)
    }
}

fn read_table(path: &Path) -> anyhow::Result<toml::Table> {
    use anyhow::Context;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    text.parse::<toml::Table>()
        .with_context(|| format!("invalid config file {}", path.display()))
}

fn lookup<'t>(table: &'t toml::Table, key: &[String]) -> Option<&'t toml::Value> {
    let (last, parents) = key.split_last()?;
    let mut table = table;
    for parent in parents {
        table = table.get(parent)?.as_table()?;
    }
    table.get(last)
}

/// Sets `key` in `table` to `value` (removes it for `None`), making the
/// tables on the way.
fn restore(table: &mut toml::Table, key: &[String], value: Option<toml::Value>) {
    let Some((last, parents)) = key.split_last() else {
        return;
    };
    let mut table = table;
    for parent in parents {
        let entry = table
            .entry(parent.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let Some(inner) = entry.as_table_mut() else {
            return;
        };
        table = inner;
    }
    match value {
        Some(value) => {
            table.insert(last.clone(), value);
        }
        None => {
            table.remove(last);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> toml::Table {
        text.parse().unwrap()
    }

    #[test]
    fn changes_are_named_as_written() {
        let old = table(
            "listen = \"127.0.0.1:1\"\n[limits]\nmax_connections_per_user = 2\nsend_queue = 9\n\
             [[route]]\npath = \"ws/<r>/\"\nconsumer = \"chat\"\n[consumer.chat]\nmodule = \"a\"\n",
        );
        let new = table(
            "listen = \"127.0.0.1:2\"\n[limits]\nmax_connections_per_user = 1\nsend_queue = 9\n\
             idle_timeout_ms = 5\n[[route]]\npath = \"chat/<r>/\"\nconsumer = \"chat\"\n\
             [consumer.chat]\nmodule = \"a\"\n[consumer.echo]\nmodule = \"b\"\n",
        );
        let changed: Vec<String> = changed_keys(&old, &new).iter().map(|k| show(k)).collect();
        assert_eq!(
            changed,
            [
                "consumer.echo.module",
                "limits.idle_timeout_ms",
                "limits.max_connections_per_user",
                "listen",
                "route"
            ]
        );
        assert!(changed_keys(&old, &old).is_empty());
    }

    #[test]
    fn what_needs_a_restart() {
        let key = |text: &str| text.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            restart_reason(&key("limits.max_connections_per_user")),
            None
        );
        assert_eq!(restart_reason(&key("limits.allowed_origins")), None);
        assert_eq!(restart_reason(&key("route")), None);
        for fixed in [
            "limits.max_connections",
            "limits.max_message_bytes",
            "listen",
            "database.path",
            "auth.secret",
            "consumer.chat.module",
            "demo.enabled",
        ] {
            assert!(restart_reason(&key(fixed)).is_some(), "{fixed}");
        }
    }

    #[test]
    fn keys_not_applied_keep_their_old_values() {
        let old = table("listen = \"127.0.0.1:1\"\n[limits]\nsend_queue = 9\n");
        let mut new = table("[limits]\nsend_queue = 9\n[database]\npath = \"x\"\n");
        let changed: Vec<String> = changed_keys(&old, &new).iter().map(|k| show(k)).collect();
        assert_eq!(changed, ["database.path", "listen"]);
        for key in changed_keys(&old, &new) {
            restore(&mut new, &key, lookup(&old, &key).cloned());
        }
        assert!(changed_keys(&old, &new).is_empty(), "{new:?}");
    }
}
