fn main() {
    codeid::emit();
}
