//! Any bytes as a Dockerfile, and as an image reference: a result or an error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let input = freshen::dockerfile::ResolveInput { engine_platform: Some("linux/amd64"), ..Default::default() };
    if let Ok(r) = freshen::dockerfile::resolve(&text, &input) {
        let _ = r.watched(freshen::dockerfile::WatchStages::All);
    }
    let _ = freshen::reference::ImageRef::parse(&text);
});
