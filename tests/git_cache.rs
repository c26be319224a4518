//! The git edge against real repositories served over `file://`: a sync lists,
//! fetches only a new commit, and the cache answers reads, path digests and checkouts.

use std::path::Path;
use std::process::Command;

use freshen::git::GitCache;

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn sync_fetches_only_new_commits_and_the_cache_serves_files_paths_and_checkouts() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("app.git");
    let work = dir.path().join("work");
    git(dir.path(), &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()]);
    git(dir.path(), &["clone", "-q", bare.to_str().unwrap(), work.to_str().unwrap()]);
    std::fs::create_dir_all(work.join("svc")).unwrap();
    std::fs::write(work.join("svc/Dockerfile"), "FROM scratch\n").unwrap();
    std::fs::write(work.join("README"), "one").unwrap();
    git(&work, &["add", "."]);
    git(&work, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one"]);
    git(&work, &["tag", "v1.2.3"]);
    git(&work, &["push", "-q", "origin", "main", "--tags"]);
    let url = format!("file://{}", bare.display());
    let cache = GitCache::beside(&dir.path().join("state.json"));
    let sync = |url: &str, r: &str| cache.sync(url, &[format!("refs/heads/{r}")], None).map(|mut m| m.pop_first().unwrap().1);
    let first = sync(&url, "main").unwrap().unwrap();
    assert_eq!(first.commit, git(&work, &["rev-parse", "HEAD"]));
    assert!(first.fetched);
    assert_eq!(first.tags, ["v1.2.3"]);
    let again = sync(&url, "main").unwrap().unwrap();
    assert!(!again.fetched, "an unchanged ref is not fetched");
    assert_eq!(cache.cached(&url, "main").as_deref(), Some(first.commit.as_str()));
    assert_eq!(cache.read(&url, &first.commit, "svc/Dockerfile").unwrap(), b"FROM scratch\n");
    let digest = |commit: &str, path: &str| {
        let list = [path.to_string()];
        cache.paths_digests(&url, commit, [("k", &list[..])]).unwrap().remove("k").unwrap()
    };
    let svc = digest(&first.commit, "svc/");

    std::fs::write(work.join("README"), "two").unwrap();
    git(&work, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let second = sync(&url, "main").unwrap().unwrap();
    assert!(second.fetched && second.commit != first.commit && second.tags.is_empty());
    assert_eq!(digest(&second.commit, "svc/"), svc, "svc/ untouched");
    assert_ne!(digest(&second.commit, "README"), digest(&first.commit, "README"));
    let out = dir.path().join("checkout");
    std::fs::create_dir_all(&out).unwrap();
    cache.checkout(&url, &second.commit, &out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("README")).unwrap(), "two");
    assert_eq!(std::fs::read_to_string(out.join("svc/Dockerfile")).unwrap(), "FROM scratch\n");
    let e = sync(&url, "nope").unwrap().unwrap_err();
    assert!(e.to_string().contains("has no ref refs/heads/nope"), "{e}");
    // Several refs of one repository: one listing, one fetch of the new commits; a missing ref fails alone.
    git(&work, &["push", "-q", "origin", "HEAD~1:refs/heads/other"]);
    let refs = ["refs/heads/main", "refs/heads/other", "refs/heads/nope"].map(String::from);
    let all = cache.sync(&url, &refs, None).unwrap();
    assert_eq!(all["refs/heads/main"].as_ref().unwrap().commit, second.commit);
    assert_eq!(all["refs/heads/other"].as_ref().unwrap().commit, first.commit);
    assert!(!all["refs/heads/other"].as_ref().unwrap().fetched, "the commit was in the cache");
    assert_eq!(cache.cached(&url, "other").as_deref(), Some(first.commit.as_str()), "the local ref is written without a fetch");
    assert!(all["refs/heads/nope"].is_err());
    let e = sync(&format!("file://{}/missing.git", dir.path().display()), "main").unwrap_err();
    eprintln!("unreachable: {e}");
}
