//! The kubelet side of the contract: socket identity, used to notice a restarted kubelet or a
//! deleted plugin socket, and the Register call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use grpcio::{CallOption, ChannelBuilder, Environment};
use nix::errno::Errno;
use nix::sys::stat::stat;

use crate::api::api::{DevicePluginOptions, RegisterRequest};
use crate::api::api_grpc::RegistrationClient;
use crate::resource::ResourceName;

/// Device-plugin API version sent in every Register request.
pub const API_VERSION: &str = "v1beta1";
/// Deadline of one Register call. The kubelet dials the plugin back before it replies, which
/// takes milliseconds when both sides are healthy.
pub const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// Device, inode and modification time of a socket file, so that a new file at the same path
/// gets a new identity. The time is needed because ext4 often gives a deleted file's inode number
/// to the next file created, and then a restarted kubelet's socket has the device and inode of
/// the old one.
// NOTE: on a kernel or file system with coarse timestamps (one clock tick, up to 10 ms), a
// socket deleted and bound again within one tick on a reused inode still looks unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketIdentity {
    device: u64,
    inode: u64,
    /// `st_mtime` and `st_mtime_nsec`, set when the socket is bound and unchanged by traffic.
    modified: (i64, i64),
}

impl SocketIdentity {
    /// Stats `path`; returns None when nothing is there.
    pub fn of(path: &Path) -> Result<Option<SocketIdentity>, Errno> {
        match stat(path) {
            Ok(info) => Ok(Some(SocketIdentity {
                device: info.st_dev,
                inode: info.st_ino,
                modified: (info.st_mtime, info.st_mtime_nsec),
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(errno) => Err(errno),
        }
    }
}

/// Sends Register requests to the kubelet's Registration socket.
pub struct KubeletClient {
    env: Arc<Environment>,
    socket: PathBuf,
}

impl KubeletClient {
    /// Creates a client for the Registration service at `socket`.
    pub fn new(env: Arc<Environment>, socket: &Path) -> KubeletClient {
        KubeletClient {
            env,
            socket: socket.to_owned(),
        }
    }

    /// Returns the kubelet socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Starts a Register call for `resource` served at `endpoint` (a file name in the plugin
    /// directory) and calls `on_done` with the outcome from a gRPC thread. The call is asynchronous,
    /// so this returns before the kubelet replies.
    pub fn register(
        &self,
        resource: &ResourceName,
        endpoint: &str,
        on_done: impl FnOnce(Result<(), String>) + Send + 'static,
    ) {
        let mut request = RegisterRequest::new();
        request.version = API_VERSION.to_owned();
        request.endpoint = endpoint.to_owned();
        request.resource_name = resource.as_str().to_owned();
        request.options = Some(DevicePluginOptions::new()).into();

        // A fresh channel per attempt, outside the global subchannel pool, so that a call after
        // a kubelet restart opens a new connection instead of reusing a dead one.
        let channel = ChannelBuilder::new(Arc::clone(&self.env))
            .use_local_subchannel_pool(true)
            .connect(&format!("unix:{}", self.socket.display()));
        let client = RegistrationClient::new(channel);
        let options = CallOption::default().timeout(REGISTER_TIMEOUT);
        match client.register_async_opt(&request, options) {
            Ok(receiver) => {
                let keep_alive = client.clone();
                client.spawn(async move {
                    let outcome = receiver.await.map(drop).map_err(|error| error.to_string());
                    drop(keep_alive);
                    on_done(outcome);
                });
            }
            Err(error) => on_done(Err(error.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_changes_with_new_file() {
        let dir = std::env::temp_dir().join(format!("tun-manager-identity-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("kubelet.sock");
        assert_eq!(SocketIdentity::of(&path), Ok(None));
        std::fs::write(&path, b"").expect("write");
        let first = SocketIdentity::of(&path).expect("stat").expect("exists");
        // Keep the first inode alive so the second file cannot reuse its number.
        let keep = dir.join("keep");
        std::fs::rename(&path, &keep).expect("rename");
        std::fs::write(&path, b"").expect("write");
        let second = SocketIdentity::of(&path).expect("stat").expect("exists");
        assert_ne!(first, second);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn identity_changes_when_inode_reused() {
        use std::os::unix::net::UnixListener;

        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("kubelet.sock");
        // ext4 usually gives the deleted socket's inode number to the next file, which is the
        // case under test. Another test may take the number first, so the loop tries again.
        for _ in 0..10 {
            drop(UnixListener::bind(&path).expect("bind"));
            let first = SocketIdentity::of(&path).expect("stat").expect("exists");
            std::fs::remove_file(&path).expect("remove");
            // A restarting kubelet takes longer than one timestamp tick to bind again.
            std::thread::sleep(Duration::from_millis(20));
            drop(UnixListener::bind(&path).expect("bind again"));
            let second = SocketIdentity::of(&path).expect("stat").expect("exists");
            std::fs::remove_file(&path).expect("remove");
            assert_ne!(first, second);
            if first.inode == second.inode {
                break;
            }
        }
    }
}
