fn main() {
    let mut header = String::new();
    microv_abi::header::write_c_header(&mut header).unwrap();
    std::fs::write("loaders/linux/microv_abi.h", header).unwrap();
}
