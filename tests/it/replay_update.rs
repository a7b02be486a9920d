//! `onboard replay --update`: fixtures rewritten into exact transcripts, so a change of the
//! bot's wording shows up as a diff of exactly the lines that say it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use onboard::flows::Flows;
use onboard::replay::{Fixture, update_all};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onboard-update-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

async fn update(file: &Path, flows: Flows) -> String {
    let mut out = Vec::new();
    assert!(
        update_all(&[file.to_owned()], Arc::new(flows), &mut out)
            .await
            .unwrap(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    std::fs::read_to_string(file).unwrap()
}

#[tokio::test]
async fn a_changed_flow_text_changes_the_transcript_and_nothing_else() {
    let dir = scratch("fixture");
    let file = dir.join("happy_path_uk.toml");
    std::fs::copy(repo("fixtures/conversations/happy_path_uk.toml"), &file).unwrap();

    let before = update(&file, Flows::embedded().unwrap()).await;
    // Every step now states its exact words, and the fixture still passes as written.
    assert!(
        before.contains("reply = \"Great - Plumber in Leeds. What's the name of your business?\""),
        "{before}"
    );
    let fixture = Fixture::load(&file).unwrap();
    onboard::replay::run(&fixture, Arc::new(Flows::embedded().unwrap()))
        .await
        .unwrap()
        .unwrap();
    // Updating again with the same flows changes nothing.
    assert_eq!(update(&file, Flows::embedded().unwrap()).await, before);

    // The same flows with one question reworded.
    let flows_dir = scratch("flows");
    for entry in std::fs::read_dir(repo("flows")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, flows_dir.join(path.file_name().unwrap())).unwrap();
    }
    let gb = flows_dir.join("en-GB.toml");
    let text = std::fs::read_to_string(&gb).unwrap();
    let reworded = text.replace(
        "What's the name of your business?",
        "What is your business called?",
    );
    assert_ne!(reworded, text);
    std::fs::write(&gb, reworded).unwrap();

    let after = update(&file, Flows::load_dir(&flows_dir).unwrap()).await;
    let changed: Vec<(&str, &str)> = before
        .lines()
        .zip(after.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(before.lines().count(), after.lines().count());
    assert_eq!(
        changed,
        vec![(
            "reply = \"Great - Plumber in Leeds. What's the name of your business?\"",
            "reply = \"Great - Plumber in Leeds. What is your business called?\""
        )]
    );
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(flows_dir).unwrap();
}
