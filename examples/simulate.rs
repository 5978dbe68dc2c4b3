fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).expect("a scenario file");
    let scenario = towline::sim::Scenario::load(&path)?;
    let report = scenario.run()?;
    print!("{}", report.table());
    Ok(())
}
