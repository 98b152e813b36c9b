//! The gRPC server of one resource on its unix socket: stale-socket cleanup, the in-use guard,
//! and an orderly stop.

use std::fmt;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::Sender;
use grpcio::{Environment, Server, ServerBuilder, ServerCredentials};

use crate::api::api_grpc::create_device_plugin;
use crate::kubelet::SocketIdentity;
use crate::plugin::DevicePluginService;

/// Failure to serve the plugin socket.
#[derive(Debug)]
pub enum ServeError {
    /// Another server already responds on the socket.
    InUse(PathBuf),
    /// A stale file at the socket path could not be removed.
    RemoveStale(PathBuf, io::Error),
    /// Something other than a socket is at the socket path; the daemon does not delete it.
    NotSocket(PathBuf),
    /// gRPC could not build the server or listen on the socket.
    Bind(PathBuf, grpcio::Error),
    /// The socket could not be checked right after binding.
    Stat(PathBuf, nix::Error),
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InUse(path) => write!(
                f,
                "another server already listens on plugin socket {}; stop the other \
                 tun-manager or pass a different --plugin-dir",
                path.display()
            ),
            Self::NotSocket(path) => write!(
                f,
                "{} exists and is not a socket; move it away so the plugin can serve there",
                path.display()
            ),
            Self::RemoveStale(path, error) => write!(
                f,
                "failed to remove stale plugin socket {}: {error}",
                path.display()
            ),
            Self::Bind(path, error) => {
                let reason = match error {
                    // grpcio keeps only the address; gRPC core logs the OS error just before.
                    grpcio::Error::BindFail(_) => "bind failed, see the gRPC error above".into(),
                    other => other.to_string(),
                };
                write!(
                    f,
                    "failed to serve plugin socket {}: {reason}; check that the directory \
                     exists and is writable",
                    path.display()
                )
            }
            Self::Stat(path, error) => {
                write!(
                    f,
                    "failed to stat plugin socket {}: {error}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for ServeError {}

/// A running gRPC server on one plugin socket.
pub struct PluginServer {
    server: Server,
    service: DevicePluginService,
    stop_streams: Sender<()>,
    path: PathBuf,
    identity: Option<SocketIdentity>,
}

impl PluginServer {
    /// Serves `service` on `path`, after removing a stale socket file there. Fails with
    /// `ServeError::InUse` when a live server responds on `path`, because gRPC would unlink its socket.
    pub fn start(
        env: &Arc<Environment>,
        path: &Path,
        service: DevicePluginService,
        stop_streams: Sender<()>,
    ) -> Result<PluginServer, ServeError> {
        remove_stale_socket(path)?;
        let bind_error = |error| ServeError::Bind(path.to_owned(), error);
        let mut server = ServerBuilder::new(Arc::clone(env))
            .register_service(create_device_plugin(service.clone()))
            .build()
            .map_err(bind_error)?;
        server
            .add_listening_port(
                format!("unix:{}", path.display()),
                ServerCredentials::insecure(),
            )
            .map_err(bind_error)?;
        server.start();
        // None when a restarting kubelet deleted the socket right after the bind. The
        // supervisor then finds no matching socket on its next tick and serves afresh.
        let identity =
            SocketIdentity::of(path).map_err(|errno| ServeError::Stat(path.to_owned(), errno))?;
        Ok(PluginServer {
            server,
            service,
            stop_streams,
            path: path.to_owned(),
            identity,
        })
    }

    /// Returns the device and inode of the socket this server bound, or None if it was deleted
    /// before it could be checked.
    pub fn identity(&self) -> Option<SocketIdentity> {
        self.identity
    }

    /// Ends every stream, cancels the calls in flight, shuts the server down, and removes the
    /// socket file if it is still the one this server bound.
    pub fn stop(mut self) {
        let shutdown = self.server.shutdown();
        drop(self.stop_streams);
        self.service.join_streams();
        // grpcio only completes shutdown once no call is open.
        self.server.cancel_all_calls();
        if let Err(error) = futures::executor::block_on(shutdown) {
            log::warn!(
                "gRPC shutdown of plugin socket {} failed: {error}",
                self.path.display()
            );
        }
        let current = SocketIdentity::of(&self.path).ok().flatten();
        if current.is_some() && current == self.identity {
            if let Err(error) = std::fs::remove_file(&self.path) {
                log::warn!(
                    "failed to remove plugin socket {}: {error}",
                    self.path.display()
                );
            }
        }
    }
}

/// Removes a socket file that no server listens on. A successful connect means a live server owns it.
fn remove_stale_socket(path: &Path) -> Result<(), ServeError> {
    match UnixStream::connect(path) {
        Ok(_) => return Err(ServeError::InUse(path.to_owned())),
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => log::debug!("no server listens on {}: {error}", path.display()),
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.file_type().is_socket() => {
            return Err(ServeError::NotSocket(path.to_owned()));
        }
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(ServeError::RemoveStale(path.to_owned(), error)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => {
            log::info!("removed stale plugin socket {}", path.display());
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ServeError::RemoveStale(path.to_owned(), error)),
    }
}
