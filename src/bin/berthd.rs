fn main() {
    std::process::exit(berth_agent::main())
}
