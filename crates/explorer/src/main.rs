fn main() -> std::process::ExitCode {
    api_sessions::cli::main()
}
