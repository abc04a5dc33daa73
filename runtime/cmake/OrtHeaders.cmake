# Locate the onnxruntime C/C++ API headers (API >= 29) without linking to onnxruntime.
#
# Order of sources, first hit wins:
#   1. ORT_INCLUDE_DIR (CMake variable or environment variable): used as is, API version checked.
#   2. The cache directory ${ONNXCOMP_CACHE_DIR}/ort-headers/<version> (default ~/.cache/onnxcomp),
#      filled by an earlier download; header checksums verified.
#   3. The official onnxruntime release archive (GitHub; short timeout, fails fast where unreachable).
#   4. The npm package com.github.asus4.onnxruntime@0.4.9 (MIT), whose Android .aar carries the
#      onnxruntime 1.29.0 headers; the tarball's sha256 is pinned.
# Downloads can be disabled with ONNXCOMP_NO_DOWNLOAD=1 (environment or CMake variable).
#
# Sets ONNXCOMP_ORT_INCLUDE_DIR (empty when nothing could be had) and ONNXCOMP_ORT_HEADERS_WHY.

set(ONNXCOMP_ORT_VERSION "1.29.0")
set(ONNXCOMP_ORT_MIN_API 29)
# The URLs are cache variables so that a mirror (or, in tests, an unreachable address) can be given.
set(ONNXCOMP_ORT_RELEASE_URL
    "https://github.com/microsoft/onnxruntime/releases/download/v${ONNXCOMP_ORT_VERSION}/onnxruntime-linux-x64-${ONNXCOMP_ORT_VERSION}.tgz"
    CACHE STRING "onnxruntime release archive holding the headers")
set(ONNXCOMP_ORT_NPM_URL
    "https://registry.npmjs.org/com.github.asus4.onnxruntime/-/com.github.asus4.onnxruntime-0.4.9.tgz"
    CACHE STRING "npm tarball holding the onnxruntime headers (sha256 pinned)")
set(ONNXCOMP_ORT_NPM_SHA256 "e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d")
# sha256 of the onnxruntime 1.29.0 headers we compile against (checked for every downloaded or cached copy)
set(ONNXCOMP_ORT_HEADER_SHA256
    "onnxruntime_c_api.h=acc0cf4b3f28d39339c76770d76164bb7a0637dc89f5fde764b4017b632f6743"
    "onnxruntime_cxx_api.h=9c63ed5bf0427ddf1c10a99aca0beeec77318ce77d2ea6f7ae76d7d933660f67"
    "onnxruntime_cxx_inline.h=c508dbb7d8203003a2584b8712118cb88e5b4ef1e1c7876a9974156fb7489301"
    "onnxruntime_float16.h=88b242845d25981633a0bbd1c148e273cf8bfb016ea3f57c4af41a06530f72b0")

# _onnxcomp_api_version(DIR OUTVAR): ORT_API_VERSION defined in DIR/onnxruntime_c_api.h, or 0
function(_onnxcomp_api_version dir outvar)
  set(v 0)
  if(EXISTS "${dir}/onnxruntime_c_api.h" AND EXISTS "${dir}/onnxruntime_cxx_api.h")
    file(STRINGS "${dir}/onnxruntime_c_api.h" line REGEX "^#define ORT_API_VERSION [0-9]+" LIMIT_COUNT 1)
    if(line MATCHES "ORT_API_VERSION ([0-9]+)")
      set(v "${CMAKE_MATCH_1}")
    endif()
  endif()
  set(${outvar} "${v}" PARENT_SCOPE)
endfunction()

# _onnxcomp_headers_ok(DIR OUTVAR): TRUE when DIR holds the pinned header set
function(_onnxcomp_headers_ok dir outvar)
  set(ok TRUE)
  foreach(entry IN LISTS ONNXCOMP_ORT_HEADER_SHA256)
    string(REPLACE "=" ";" kv "${entry}")
    list(GET kv 0 name)
    list(GET kv 1 want)
    if(NOT EXISTS "${dir}/${name}")
      set(ok FALSE)
      break()
    endif()
    file(SHA256 "${dir}/${name}" got)
    if(NOT got STREQUAL want)
      message(STATUS "onnxcomp: ${dir}/${name}: sha256 ${got} does not match the pinned ${want}")
      set(ok FALSE)
      break()
    endif()
  endforeach()
  set(${outvar} ${ok} PARENT_SCOPE)
endfunction()

# _onnxcomp_install_headers(SRC_DIR DEST_DIR OUTVAR): verify SRC_DIR, copy its headers to DEST_DIR
function(_onnxcomp_install_headers src dest outvar)
  _onnxcomp_headers_ok("${src}" ok)
  if(ok)
    file(GLOB hdrs "${src}/*.h" "${src}/*.inc")
    file(REMOVE_RECURSE "${dest}")
    file(MAKE_DIRECTORY "${dest}")
    file(COPY ${hdrs} DESTINATION "${dest}")
  endif()
  set(${outvar} ${ok} PARENT_SCOPE)
endfunction()

set(ONNXCOMP_ORT_INCLUDE_DIR "")
set(ONNXCOMP_ORT_HEADERS_WHY "")

# 1. explicit include dir
if(NOT ORT_INCLUDE_DIR AND DEFINED ENV{ORT_INCLUDE_DIR})
  set(ORT_INCLUDE_DIR "$ENV{ORT_INCLUDE_DIR}")
endif()
if(ORT_INCLUDE_DIR)
  _onnxcomp_api_version("${ORT_INCLUDE_DIR}" api)
  if(api GREATER_EQUAL ONNXCOMP_ORT_MIN_API)
    set(ONNXCOMP_ORT_INCLUDE_DIR "${ORT_INCLUDE_DIR}")
    message(STATUS "onnxcomp: onnxruntime headers (API ${api}) from ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR}")
  else()
    message(WARNING "onnxcomp: ORT_INCLUDE_DIR=${ORT_INCLUDE_DIR} has no onnxruntime headers of API >= "
                    "${ONNXCOMP_ORT_MIN_API} (found API ${api}); trying the cache and downloads")
  endif()
endif()

# 2. cache
if(DEFINED ENV{ONNXCOMP_CACHE_DIR} AND NOT "$ENV{ONNXCOMP_CACHE_DIR}" STREQUAL "")
  set(_onnxcomp_cache "$ENV{ONNXCOMP_CACHE_DIR}")
elseif(DEFINED ENV{XDG_CACHE_HOME} AND NOT "$ENV{XDG_CACHE_HOME}" STREQUAL "")
  set(_onnxcomp_cache "$ENV{XDG_CACHE_HOME}/onnxcomp")
elseif(DEFINED ENV{HOME} AND NOT "$ENV{HOME}" STREQUAL "")
  set(_onnxcomp_cache "$ENV{HOME}/.cache/onnxcomp")
else()
  set(_onnxcomp_cache "${CMAKE_BINARY_DIR}/onnxcomp-cache")
endif()
set(_onnxcomp_hdr_cache "${_onnxcomp_cache}/ort-headers/${ONNXCOMP_ORT_VERSION}")
if(NOT ONNXCOMP_ORT_INCLUDE_DIR)
  _onnxcomp_headers_ok("${_onnxcomp_hdr_cache}" ok)
  if(ok)
    set(ONNXCOMP_ORT_INCLUDE_DIR "${_onnxcomp_hdr_cache}")
    message(STATUS "onnxcomp: onnxruntime ${ONNXCOMP_ORT_VERSION} headers from cache ${_onnxcomp_hdr_cache}")
  endif()
endif()

set(_onnxcomp_no_download OFF)
if(ONNXCOMP_NO_DOWNLOAD OR "$ENV{ONNXCOMP_NO_DOWNLOAD}" MATCHES "^(1|ON|on|TRUE|true|yes)$")
  set(_onnxcomp_no_download ON)
endif()

set(_onnxcomp_tmp "${CMAKE_BINARY_DIR}/onnxcomp-ort-download")

# 3. official release archive (short timeout: unreachable on registry-only networks)
if(NOT ONNXCOMP_ORT_INCLUDE_DIR AND NOT _onnxcomp_no_download)
  file(MAKE_DIRECTORY "${_onnxcomp_tmp}")
  set(_tgz "${_onnxcomp_tmp}/onnxruntime-release.tgz")
  message(STATUS "onnxcomp: fetching onnxruntime ${ONNXCOMP_ORT_VERSION} headers from the release archive")
  file(DOWNLOAD "${ONNXCOMP_ORT_RELEASE_URL}" "${_tgz}" TIMEOUT 20 INACTIVITY_TIMEOUT 5 STATUS st)
  list(GET st 0 rc)
  if(rc EQUAL 0)
    set(_x "${_onnxcomp_tmp}/release")
    file(REMOVE_RECURSE "${_x}")
    file(ARCHIVE_EXTRACT INPUT "${_tgz}" DESTINATION "${_x}"
         PATTERNS "onnxruntime-linux-x64-${ONNXCOMP_ORT_VERSION}/include/*")
    _onnxcomp_install_headers("${_x}/onnxruntime-linux-x64-${ONNXCOMP_ORT_VERSION}/include"
                              "${_onnxcomp_hdr_cache}" ok)
    if(ok)
      set(ONNXCOMP_ORT_INCLUDE_DIR "${_onnxcomp_hdr_cache}")
    endif()
    file(REMOVE_RECURSE "${_x}")
  else()
    list(GET st 1 msg)
    message(STATUS "onnxcomp: release archive not reachable (${msg})")
  endif()
  file(REMOVE "${_tgz}")
endif()

# 4. npm package (Android .aar inside holds headers/)
if(NOT ONNXCOMP_ORT_INCLUDE_DIR AND NOT _onnxcomp_no_download)
  file(MAKE_DIRECTORY "${_onnxcomp_tmp}")
  set(_tgz "${_onnxcomp_tmp}/onnxruntime-npm.tgz")
  message(STATUS "onnxcomp: fetching onnxruntime ${ONNXCOMP_ORT_VERSION} headers from the npm registry "
                 "(com.github.asus4.onnxruntime 0.4.9, ~150 MB)")
  # The hash is checked here rather than with EXPECTED_HASH: with EXPECTED_HASH a failed download (offline)
  # is a "HASH mismatch" configure error, where it must only mean "no runtime".
  file(DOWNLOAD "${ONNXCOMP_ORT_NPM_URL}" "${_tgz}" TIMEOUT 900 INACTIVITY_TIMEOUT 60 STATUS st)
  list(GET st 0 rc)
  if(rc EQUAL 0)
    file(SHA256 "${_tgz}" got)
    if(NOT got STREQUAL ONNXCOMP_ORT_NPM_SHA256)
      set(rc 1)
      set(st "1;\"sha256 ${got} is not the pinned ${ONNXCOMP_ORT_NPM_SHA256}\"")
    endif()
  endif()
  if(rc EQUAL 0)
    set(_x "${_onnxcomp_tmp}/npm")
    file(REMOVE_RECURSE "${_x}")
    file(ARCHIVE_EXTRACT INPUT "${_tgz}" DESTINATION "${_x}" PATTERNS "package/Plugins/Android/onnxruntime.aar")
    if(EXISTS "${_x}/package/Plugins/Android/onnxruntime.aar")
      file(ARCHIVE_EXTRACT INPUT "${_x}/package/Plugins/Android/onnxruntime.aar" DESTINATION "${_x}/aar"
           PATTERNS "headers/*")
      _onnxcomp_install_headers("${_x}/aar/headers" "${_onnxcomp_hdr_cache}" ok)
      if(ok)
        set(ONNXCOMP_ORT_INCLUDE_DIR "${_onnxcomp_hdr_cache}")
      endif()
    endif()
    file(REMOVE_RECURSE "${_x}")
  else()
    list(GET st 1 msg)
    message(STATUS "onnxcomp: npm package not available (${msg})")
  endif()
  file(REMOVE "${_tgz}")
endif()

if(ONNXCOMP_ORT_INCLUDE_DIR)
  if(NOT ONNXCOMP_ORT_INCLUDE_DIR STREQUAL ORT_INCLUDE_DIR)
    message(STATUS "onnxcomp: using onnxruntime headers in ${ONNXCOMP_ORT_INCLUDE_DIR}")
  endif()
elseif(_onnxcomp_no_download)
  set(ONNXCOMP_ORT_HEADERS_WHY "no onnxruntime >= 1.29 headers in ORT_INCLUDE_DIR or the cache, and downloads are off (ONNXCOMP_NO_DOWNLOAD)")
else()
  set(ONNXCOMP_ORT_HEADERS_WHY "no onnxruntime >= 1.29 headers: not in ORT_INCLUDE_DIR or the cache (${_onnxcomp_hdr_cache}), and neither download worked")
endif()
