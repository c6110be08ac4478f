//! Peoplebox employee → canonical worker.

use canonical_model::{
    Entity, EntityKind::Worker as W, FieldRule, MapError, Mapper, MappingVersion, Transform, Worker,
};
use serde_json::Value;

#[derive(Debug)]
pub struct EmployeesMapper(MappingVersion);

impl EmployeesMapper {
    pub fn new() -> Self {
        use Transform::*;
        let rules = vec![
            FieldRule::new(W, "source_id", &["/id"], Text),
            FieldRule::new(W, "display_name", &["/name"], Text),
            FieldRule::new(W, "work_email", &["/email"], Lowercase),
            FieldRule::new(W, "hire_date", &["/hired_on"], Date),
            FieldRule::new(W, "source_modified_at", &["/updated_at"], Timestamp),
        ];
        Self(MappingVersion::new("peoplebox.employees", "1", rules).expect("valid rules"))
    }
}

impl Default for EmployeesMapper {
    fn default() -> Self {
        Self::new()
    }
}

impl Mapper for EmployeesMapper {
    fn mapping(&self) -> &MappingVersion {
        &self.0
    }

    fn map(&self, record: &Value) -> Result<Vec<Entity>, MapError> {
        let r = self.0.reader(record);
        Ok(vec![Entity::Worker(Worker {
            source_id: r.required_text(W, "source_id")?,
            display_name: r.text(W, "display_name")?,
            work_email: r.text(W, "work_email")?,
            hire_date: r.date(W, "hire_date")?,
            source_modified_at: r.timestamp(W, "source_modified_at")?,
            ..Worker::default()
        })])
    }
}
