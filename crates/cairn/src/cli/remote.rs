//! `cairn remote`: the backup targets of LINSTOR's tree (`linstor remote
//! …`).

use cairn_api::remote::{LinstorRemote, RemoteList, S3Remote};
use cairn_client::seg;
use clap::Subcommand;

use super::Ctx;
use super::encryption::secret;
use super::table::Table;

#[derive(Subcommand, Debug)]
pub enum RemoteCmd {
    /// List the remotes (S3, LINSTOR, EBS) backups can be shipped to.
    #[command(visible_alias = "l", alias = "ls")]
    List,
    /// Create a remote.
    #[command(visible_alias = "c", subcommand)]
    Create(RemoteKindCreate),
    /// Modify a remote.
    #[command(visible_alias = "m", subcommand)]
    Modify(RemoteKindModify),
    /// Delete a remote.
    #[command(visible_alias = "d")]
    Delete {
        /// The remote.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum RemoteKindCreate {
    /// An S3 bucket; the keys are stored encrypted with the master
    /// passphrase, which must be entered.
    S3 {
        /// Address `endpoint/bucket/key` instead of `bucket.endpoint/key`.
        #[arg(long = "use-path-style")]
        use_path_style: bool,
        /// The remote's name.
        name: String,
        /// The S3 server, `host[:port]` or a URL.
        endpoint: String,
        /// The bucket backups go to.
        bucket: String,
        /// The bucket's region (e.g. us-east-1).
        region: String,
        /// The access key id.
        access_key: String,
        /// The secret key; read from stdin when not given.
        secret_key: Option<String>,
    },
    /// Another LINSTOR (or Cairn) controller.
    Linstor {
        /// The remote's name.
        name: String,
        /// Its REST address (`http://` and port 3370 when not given).
        url: String,
        /// Its cluster id (its `Cluster/LocalID` property).
        #[arg(long = "cluster-id")]
        cluster_id: Option<String>,
        /// Its master passphrase (for LUKS volumes); read from stdin when
        /// the option has no value.
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        passphrase: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum RemoteKindModify {
    /// Change what is given of an S3 remote.
    S3 {
        /// The remote.
        name: String,
        /// A new endpoint.
        #[arg(long)]
        endpoint: Option<String>,
        /// A new bucket.
        #[arg(long)]
        bucket: Option<String>,
        /// A new region.
        #[arg(long)]
        region: Option<String>,
        /// A new access key id.
        #[arg(long = "access_key", alias = "access-key")]
        access_key: Option<String>,
        /// Read from stdin when the option has no value.
        #[arg(long = "secret_key", alias = "secret-key", num_args = 0..=1, default_missing_value = "")]
        secret_key: Option<String>,
    },
    /// Change what is given of a LINSTOR remote.
    Linstor {
        /// The remote.
        name: String,
        /// A new REST address.
        #[arg(long)]
        url: Option<String>,
        /// A new cluster id.
        #[arg(long = "cluster-id")]
        cluster_id: Option<String>,
        /// Read from stdin when the option has no value.
        #[arg(long, num_args = 0..=1, default_missing_value = "")]
        passphrase: Option<String>,
    },
}

/// An option given without a value asks on stdin (linstor-client prompts).
fn asked(v: Option<String>, what: &str) -> Option<String> {
    match v {
        Some(s) if s.is_empty() => secret(None, what),
        other => other,
    }
}

pub fn run(ctx: &Ctx, cmd: RemoteCmd) -> i32 {
    match cmd {
        RemoteCmd::List => {
            let list: RemoteList = match ctx.get("/v1/remotes") {
                Ok(l) => l,
                Err(code) => return code,
            };
            let mut t = Table::new(&["Name", "Type", "Info"]);
            let text = |n: &Option<String>| n.clone().unwrap_or_default();
            for r in &list.s3_remotes {
                let info = format!("{}.{}/{}", text(&r.region), text(&r.endpoint), text(&r.bucket));
                t.row(vec![text(&r.remote_name).into(), "S3".into(), info.into()]);
            }
            for r in &list.linstor_remotes {
                t.row(vec![text(&r.remote_name).into(), "Linstor".into(), text(&r.url).into()]);
            }
            for r in &list.ebs_remotes {
                t.row(vec![text(&r.remote_name).into(), "EBS".into(), text(&r.region).into()]);
            }
            ctx.show(&list, t)
        }
        RemoteCmd::Create(RemoteKindCreate::S3 { use_path_style, name, endpoint, bucket, region, access_key, secret_key }) => {
            let Some(secret_key) = secret(secret_key, "Secret-key") else {
                return ctx.problem(cairn_api::rc::FAIL_INVLD_BACKUP_CONFIG, "a secret key is needed");
            };
            let body = S3Remote {
                remote_name: Some(name),
                endpoint: Some(endpoint),
                bucket: Some(bucket),
                region: Some(region),
                access_key: Some(access_key),
                secret_key: Some(secret_key),
                use_path_style: Some(use_path_style),
            };
            ctx.send("POST", "/v1/remotes/s3", Some(&body))
        }
        RemoteCmd::Create(RemoteKindCreate::Linstor { name, url, cluster_id, passphrase }) => {
            let passphrase = asked(passphrase, "Remote controllers passphrase");
            let body = LinstorRemote { remote_name: Some(name), url: Some(url), cluster_id, passphrase };
            ctx.send("POST", "/v1/remotes/linstor", Some(&body))
        }
        RemoteCmd::Modify(RemoteKindModify::S3 { name, endpoint, bucket, region, access_key, secret_key }) => {
            let secret_key = asked(secret_key, "Secret-key");
            let body = S3Remote { remote_name: Some(name.clone()), endpoint, bucket, region, access_key, secret_key, use_path_style: None };
            ctx.send("PUT", &format!("/v1/remotes/s3/{}", seg(&name)), Some(&body))
        }
        RemoteCmd::Modify(RemoteKindModify::Linstor { name, url, cluster_id, passphrase }) => {
            let passphrase = asked(passphrase, "Remote controllers passphrase");
            let body = LinstorRemote { remote_name: Some(name.clone()), url, cluster_id, passphrase };
            ctx.send("PUT", &format!("/v1/remotes/linstor/{}", seg(&name)), Some(&body))
        }
        RemoteCmd::Delete { name } => {
            let q = super::query(&[("remote_name", &[name])]);
            ctx.send("DELETE", &format!("/v1/remotes{q}"), None::<&()>)
        }
    }
}
