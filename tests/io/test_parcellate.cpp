// io/parcellate against numpy: tests/io/parcellate_fixtures.py writes NIfTI scans and atlases with nibabel (on
// different grids, oblique, qform-only, scaled int16, NaN voxels, the real nitime scan) and computes the parcel
// means itself with the same nearest-voxel rule, then detrend/z-score/robust/resampling with numpy; we compare.
#include "io/parcellate.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "tests/common/test_files.h"

namespace {

namespace fs = std::filesystem;
using bfm::io::ParcellateOptions;
using bfm::io::ParcelSeries;
using bfm::io::RunScaling;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const std::string kNitimeScan = "/usr/lib/python3/dist-packages/nitime/data/fmri1.nii.gz";
const std::string kAal = "/usr/share/mricron/templates/aal.nii.gz";

struct Reference {
  std::vector<int64_t> labels, counts;
  int64_t P = 0, T = 0;
  std::vector<double> x;  // [T, P]
};

class Parcellate : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(bfm::test::make_temp_dir("parcellate"));
    const std::string log = (*dir_ / "fixtures.log").string();
    const std::string command = "/usr/bin/python3 " BFM_PARCELLATE_FIXTURES " " + dir_->string() + " > " + log + " 2>&1";
    const int rc = std::system(command.c_str());
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    fixtures_ok_ = (rc == 0);
    fixture_log_ = new std::string(ss.str());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
    delete fixture_log_;
  }
  void SetUp() override { ASSERT_TRUE(fixtures_ok_) << *fixture_log_; }

  static std::string file(const std::string& name) { return (*dir_ / name).string(); }

  static Reference reference(const std::string& name) {
    std::ifstream in(file(name + ".ref"));
    Reference r;
    in >> r.P >> r.T;
    r.labels.resize(r.P);
    r.counts.resize(r.P);
    for (auto& l : r.labels) in >> l;
    for (auto& c : r.counts) in >> c;
    r.x.resize(r.T * r.P);
    for (auto& v : r.x) in >> v;
    EXPECT_TRUE(in) << "cannot parse " << name << ".ref";
    return r;
  }

  // Labels, counts and every value of ours against numpy's, relative to the values' scale.
  static void expect_matches(const ParcelSeries& got, const Reference& ref, double tol) {
    ASSERT_EQ(got.labels, ref.labels);
    EXPECT_EQ(got.voxel_count, ref.counts);
    ASSERT_EQ(got.n_time, ref.T);
    ASSERT_EQ(got.series.size(), ref.x.size());
    for (int64_t t = 0; t < ref.T; ++t)
      for (int64_t p = 0; p < ref.P; ++p) {
        const double want = ref.x[t * ref.P + p];
        ASSERT_NEAR(got.series[t * ref.P + p], want, tol * std::max(1.0, std::abs(want)))
            << "t=" << t << " label=" << ref.labels[p];
      }
  }

  static ParcellateOptions raw_means() {
    ParcellateOptions o;
    o.preprocess = {false, 0, RunScaling::none};
    return o;
  }

  template <class F>
  static std::string error_of(F&& f) {
    try {
      f();
    } catch (const bfm::Error& e) {
      return e.what();
    }
    return "(no error)";
  }

  static inline fs::path* dir_ = nullptr;
  static inline std::string* fixture_log_ = nullptr;
  static inline bool fixtures_ok_ = false;
};

TEST_F(Parcellate, RawMeansOnA3mmAtlasOnAnotherGridMatchNumpy) {
  ParcellateOptions o = raw_means();
  o.volumes_per_read = 7;  // chunks that do not divide T = 30
  const ParcelSeries got = bfm::io::parcellate(file("scan_mni.nii.gz"), file("atlas_3mm.nii.gz"), o);
  expect_matches(got, reference("mni_raw"), 1e-6);
  EXPECT_THAT(got.empty_labels, ElementsAre(40));
  EXPECT_DOUBLE_EQ(got.source_tr, 1.5);
  EXPECT_DOUBLE_EQ(got.tr, 1.5);
}

TEST_F(Parcellate, QformOnlyScanAndObliqueFloatAtlasMatchNumpy) {
  // The scan's sform (code 0) is a decoy 7 mm grid 500 mm away: using it would map nothing into the atlas.
  const ParcelSeries got = bfm::io::parcellate(file("scan_qform.nii"), file("atlas_oblique.nii.gz"), raw_means());
  const Reference ref = reference("oblique_raw");
  expect_matches(got, ref, 1e-5);
  EXPECT_DOUBLE_EQ(got.source_tr, 2.0);  // pixdim[4] = 2000 in msec
}

TEST_F(Parcellate, DetrendZscoreRobustAndResamplingMatchNumpy) {
  ParcellateOptions o;
  o.preprocess = {true, 0, RunScaling::zscore};
  expect_matches(bfm::io::parcellate(file("scan_mni.nii.gz"), file("atlas_3mm.nii.gz"), o),
                 reference("mni_detrend_zscore"), 1e-5);
  o.preprocess.scaling = RunScaling::robust;
  expect_matches(bfm::io::parcellate(file("scan_mni.nii.gz"), file("atlas_3mm.nii.gz"), o),
                 reference("mni_detrend_robust"), 1e-5);
  o.preprocess = {true, 2.0, RunScaling::zscore};
  const ParcelSeries got = bfm::io::parcellate(file("scan_mni.nii.gz"), file("atlas_3mm.nii.gz"), o);
  expect_matches(got, reference("mni_detrend_resample_zscore"), 1e-5);
  EXPECT_DOUBLE_EQ(got.tr, 2.0);
  EXPECT_DOUBLE_EQ(got.source_tr, 1.5);
}

TEST_F(Parcellate, NonFiniteVoxelsAreLeftOutAndAnAllNanParcelIsEmpty) {
  const ParcelSeries got = bfm::io::parcellate(file("scan_nan.nii.gz"), file("atlas_own.nii.gz"), raw_means());
  expect_matches(got, reference("nan_raw"), 1e-6);
  EXPECT_THAT(got.empty_labels, ElementsAre(3));
  // parcel 1: one voxel NaN at all 10 time points plus one value; parcel 2: one inf; parcel 3: 10 voxels x 10.
  EXPECT_THAT(got.nonfinite_values, ElementsAre(11, 1, 100, 0));
  for (double v : got.series) EXPECT_TRUE(std::isfinite(v));
}

TEST_F(Parcellate, AParcelWithNoFiniteValueAtOneTimePointIsAnError) {
  const std::string scan = file("scan_nan_hole.nii.gz");
  EXPECT_THAT(error_of([&] { bfm::io::parcellate(scan, file("atlas_own.nii.gz"), raw_means()); }),
              AllOf(HasSubstr(scan), HasSubstr("parcel 4"), HasSubstr("time point 6")));
}

TEST_F(Parcellate, RealNitimeScanWithALabelImageOnItsOwnGridMatchesNumpy) {
  const ParcelSeries got = bfm::io::parcellate(kNitimeScan, file("atlas_real_grid.nii.gz"), raw_means());
  expect_matches(got, reference("real_raw"), 1e-6);
  EXPECT_TRUE(got.empty_labels.empty());
  EXPECT_NEAR(got.source_tr, 1.35, 1e-6);
  EXPECT_EQ(got.n_time, 40);
}

TEST_F(Parcellate, RealNitimeScanInScannerSpaceDoesNotOverlapTheRealAalAtlas) {
  EXPECT_THAT(error_of([] { bfm::io::parcellate(kNitimeScan, kAal, {}); }),
              AllOf(HasSubstr(kNitimeScan), HasSubstr(kAal), HasSubstr("does not overlap")));
}

TEST_F(Parcellate, ScanThatIsNot4DIsAnError) {
  const std::string scan = file("scan_3d.nii.gz");
  EXPECT_THAT(error_of([&] { bfm::io::parcellate(scan, file("atlas_oblique.nii.gz"), {}); }),
              AllOf(HasSubstr(scan), HasSubstr("must be 4-D"), HasSubstr("[12, 11, 9]")));
}

TEST_F(Parcellate, AtlasThatIsNot3DOrNotIntegerIsAnError) {
  const std::string atlas4 = file("atlas_4d.nii.gz"), fractional = file("atlas_fractional.nii.gz");
  EXPECT_THAT(error_of([&] { bfm::io::parcellate(file("scan_mni.nii.gz"), atlas4, {}); }),
              AllOf(HasSubstr(atlas4), HasSubstr("3-D"), HasSubstr("[19, 20, 16, 2]")));
  EXPECT_THAT(error_of([&] { bfm::io::parcellate(file("scan_qform.nii"), fractional, {}); }),
              AllOf(HasSubstr(fractional), HasSubstr("non-negative integers"), HasSubstr(".5")));
}

TEST_F(Parcellate, MissingTrIsAnErrorUnlessGiven) {
  const std::string scan = file("scan_no_tr.nii.gz");
  EXPECT_THAT(error_of([&] { bfm::io::parcellate(scan, file("atlas_oblique.nii.gz"), {}); }),
              AllOf(HasSubstr(scan), HasSubstr("no TR")));
  ParcellateOptions o = raw_means();
  o.tr = 0.8;  // as a JSON sidecar's RepetitionTime would give it
  const ParcelSeries got = bfm::io::parcellate(scan, file("atlas_oblique.nii.gz"), o);
  EXPECT_DOUBLE_EQ(got.tr, 0.8);
  expect_matches(got, reference("oblique_raw"), 1e-5);  // same voxels and affine as scan_qform.nii
}

TEST_F(Parcellate, ScanWithoutAnyAffineIsAnError) {
  const std::string scan = file("scan_no_affine.nii");
  EXPECT_THAT(error_of([&] { bfm::io::parcellate(scan, file("atlas_oblique.nii.gz"), {}); }),
              AllOf(HasSubstr(scan), HasSubstr("neither an sform nor a qform")));
}

TEST_F(Parcellate, MissingUnreadableAndTruncatedFilesAreErrors) {
  const std::string atlas = file("atlas_oblique.nii.gz");
  for (const std::string name : {"does_not_exist.nii.gz", "not_nifti.nii"}) {
    EXPECT_THAT(error_of([&] { bfm::io::parcellate(file(name), atlas, {}); }),
                AllOf(HasSubstr(file(name)), HasSubstr("not a readable NIfTI")));
  }
  for (const std::string name : {"scan_truncated.nii", "scan_truncated.nii.gz"}) {
    EXPECT_THAT(error_of([&] { bfm::io::parcellate(file(name), atlas, {}); }),
                AllOf(HasSubstr(file(name)), HasSubstr("truncated")));
  }
}

}  // namespace
