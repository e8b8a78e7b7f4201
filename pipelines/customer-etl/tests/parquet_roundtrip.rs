//! The Parquet profile table holds the same values as the CSV one, typed.

mod common;

use arrow_array::cast::AsArray;
use arrow_array::types::{Date32Type, Decimal128Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, TimeUnit};
use customer_etl::calendar::{Date, format_timestamp};
use customer_etl::{Format, generate};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A cell rendered as the CSV writer renders it (null -> empty).
fn cell(batch: &RecordBatch, column: usize, row: usize) -> String {
    let array = batch.column(column);
    if array.is_null(row) {
        return String::new();
    }
    match array.data_type() {
        DataType::Utf8 => array.as_string::<i32>().value(row).to_string(),
        DataType::Boolean => array.as_boolean().value(row).to_string(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).to_string(),
        DataType::Date32 => Date(array.as_primitive::<Date32Type>().value(row)).to_string(),
        DataType::Decimal128(_, scale) => {
            let v = array.as_primitive::<Decimal128Type>().value(row);
            let unit = 10i128.pow(*scale as u32);
            format!("{}.{:0width$}", v / unit, v % unit, width = *scale as usize)
        }
        DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) if tz.as_ref() == "UTC" => {
            format_timestamp(
                array.as_primitive::<TimestampMicrosecondType>().value(row) / 1_000_000,
            )
        }
        other => panic!("unexpected column type {other}"),
    }
}

#[test]
fn parquet_equals_csv() {
    let data = tempfile::tempdir().unwrap();
    generate(data.path(), 1200, 5).unwrap();
    let (csv_out, _) = common::run(data.path(), 3, 2, Format::Csv);
    let (pq_out, summary) = common::run(data.path(), 3, 2, Format::Parquet);
    let csv_rows = common::profile_rows(csv_out.path());
    let mut pq_rows = Vec::new();
    for shard in 0..3 {
        let path = pq_out
            .path()
            .join(format!("profiles/shard-{shard:05}.parquet"));
        let file = std::fs::File::open(&path).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let schema = batch.schema();
            assert_eq!(
                schema.field_with_name("in_crm").unwrap().data_type(),
                &DataType::Boolean
            );
            assert_eq!(
                schema.field_with_name("signup_date").unwrap().data_type(),
                &DataType::Date32
            );
            assert_eq!(
                schema
                    .field_with_name("lifetime_value")
                    .unwrap()
                    .data_type(),
                &DataType::Decimal128(38, 2)
            );
            assert_eq!(
                schema.field_with_name("avg_csat").unwrap().data_type(),
                &DataType::Decimal128(3, 2)
            );
            assert_eq!(
                schema.field_with_name("health_score").unwrap().data_type(),
                &DataType::Int64
            );
            for row in 0..batch.num_rows() {
                let fields: Vec<String> = (0..batch.num_columns())
                    .map(|c| cell(&batch, c, row))
                    .collect();
                let mut line = Vec::new();
                for (i, f) in fields.iter().enumerate() {
                    if i > 0 {
                        line.push(b',');
                    }
                    customer_etl::writer::push_csv_field(&mut line, f);
                }
                pq_rows.push(String::from_utf8(line).unwrap());
            }
        }
    }
    assert_eq!(pq_rows.len() as u64, summary.profiles_generated);
    assert_eq!(pq_rows, csv_rows);
}
