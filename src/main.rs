fn main() {
    eprintln!("shardcast: being built");
}
