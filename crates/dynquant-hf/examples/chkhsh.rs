//! Prints llama.cpp's pre-tokenizer hash (`chkhsh`) of `tokenizer.json` files, and the name the
//! table gives it. Usage: chkhsh TOKENIZER_JSON...
fn main() {
    for p in std::env::args().skip(1) {
        let text = match std::fs::read_to_string(&p) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{p}: {e}");
                continue;
            }
        };
        let tj: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{p}: {e}");
                continue;
            }
        };
        match dynquant_hf::pre_tokenizer_hash::chkhsh(&tj, None) {
            Ok(h) => println!(
                "{p}\t{h}\t{}",
                dynquant_hf::pre_tokenizer_hash::name_for_hash(&h).unwrap_or("(unknown)")
            ),
            Err(e) => println!("{p}\tunsupported: {e}"),
        }
    }
}
