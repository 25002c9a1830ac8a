use std::process::ExitCode;

fn main() -> ExitCode {
    layerbuild::main()
}
