fn main() {
    std::process::exit(berth_ctl::main())
}
