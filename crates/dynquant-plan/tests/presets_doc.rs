//! `docs/recipes.md` lists the presets from the preset table, not by hand: the block between
//! its `presets:start`/`presets:end` markers must be [`preset_table_markdown`]'s output.
//! `DYNQUANT_UPDATE_DOCS=1 cargo test -p dynquant-plan --test presets_doc` rewrites it.

use std::path::PathBuf;

use dynquant_plan::preset::preset_table_markdown;

const START: &str = "<!-- presets:start (generated from the preset table; see crates/dynquant-plan/tests/presets_doc.rs) -->\n";
const END: &str = "<!-- presets:end -->";

#[test]
fn recipes_md_lists_the_preset_table() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/recipes.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let start = text.find(START).expect("start marker") + START.len();
    let end = start + text[start..].find(END).expect("end marker");
    let want = preset_table_markdown();
    if std::env::var("DYNQUANT_UPDATE_DOCS").as_deref() == Ok("1") {
        let updated = format!("{}{want}{}", &text[..start], &text[end..]);
        std::fs::write(&path, updated).unwrap();
        return;
    }
    assert_eq!(
        &text[start..end],
        want,
        "docs/recipes.md's preset list is stale: run DYNQUANT_UPDATE_DOCS=1 cargo test -p dynquant-plan --test presets_doc"
    );
}
