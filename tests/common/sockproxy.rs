//! A test-only proxy in front of the engine's unix socket. It forwards bytes
//! both ways, and can cut every open connection at once, to act out an engine
//! that goes away in the middle of a build.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The proxy; stops on drop.
pub struct SocketProxy {
    path: PathBuf,
    open: Arc<Mutex<Vec<UnixStream>>>,
    stop: Arc<AtomicBool>,
    refuse: Arc<AtomicBool>,
}

impl SocketProxy {
    /// Listens at `path` and forwards to the engine socket at `upstream`.
    pub fn start(path: &Path, upstream: &Path) -> SocketProxy {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).unwrap();
        let open = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let refuse = Arc::new(AtomicBool::new(false));
        let (o, st, up, re) = (open.clone(), stop.clone(), upstream.to_path_buf(), refuse.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                if re.load(Ordering::SeqCst) {
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    continue;
                }
                let Ok(engine) = UnixStream::connect(&up) else { continue };
                {
                    let mut o = o.lock().unwrap();
                    o.push(client.try_clone().unwrap());
                    o.push(engine.try_clone().unwrap());
                }
                pipe(client.try_clone().unwrap(), engine.try_clone().unwrap());
                pipe(engine, client);
            }
        });
        SocketProxy { path: path.to_path_buf(), open, stop, refuse }
    }

    /// While `on`, cuts every connection open now and every new one as it comes: an engine gone away.
    pub fn refuse(&self, on: bool) {
        self.refuse.store(on, Ordering::SeqCst);
        if on {
            self.cut_all();
        }
    }

    /// Cuts every connection open now; new ones are still accepted.
    pub fn cut_all(&self) {
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

fn pipe(mut from: UnixStream, mut to: UnixStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Both);
    });
}

impl Drop for SocketProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.cut_all();
        let _ = UnixStream::connect(&self.path);
        let _ = std::fs::remove_file(&self.path);
    }
}
