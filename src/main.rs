//! The `wxkeeper` binary: everything lives in the library; see `wxkeeper::cli`.

fn main() -> std::process::ExitCode {
    wxkeeper::cli::main()
}
