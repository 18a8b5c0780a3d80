;;; ob-chat-ai-images.el --- Images out of a chat-ai block  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; A block with :endpoint images sends its body as the prompt of the
;; images endpoint, and its result links the images made:
;;
;;   #+begin_src chat-ai :endpoint images :file cat.png :size 1024x1024
;;   A cat in the style of Hokusai
;;   #+end_src
;;
;;   #+RESULTS:
;;   :results:
;;   [[file:cat.png]]
;;   :end:
;;
;; The helper writes the files (to :file, with -2, -3 ... for :n > 1;
;; without :file, under a folder next to the Org file, named after the
;; block or a hash of its prompt), as Babel's convention has the
;; language write a file and Babel link it.  With :image (or image
;; links in the body) the images are edited instead, with :mask.

;;; Code:

;;;; Requirements

(require 'ob)
(require 'org)
(require 'seq)
(require 'subr-x)
(require 'ob-chat-ai-process)
(require 'ob-chat-ai-reply)
(require 'ob-chat-ai-files)

(defvar org-inline-image-overlays)
(defvar org-link-preview-overlays)
(declare-function org-link-preview-refresh "ol" ())

;;;; The request

(defun ob-chat-ai-images-p (params)
  "Return non-nil when PARAMS send the block to the images endpoint."
  (equal (format "%s" (ob-chat-ai--param params :endpoint)) "images"))

(defun ob-chat-ai-images-fields (prompt params)
  "Return the request fields of an images request for PROMPT and PARAMS.
The image links in PROMPT and the files of :image are the images to
edit, :mask the mask; the rest of PROMPT is the prompt.  Remote
images are passed on as URLs, for the helper to refuse in its words."
  (let* ((content (ob-chat-ai-files-content
                   prompt (ob-chat-ai-files--document-directory)))
         (parts (append (if (stringp content)
                            `(((type . "text") (text . ,content)))
                          content)
                        (ob-chat-ai-files-header-parts params '(:image))))
         (words (mapconcat (lambda (part) (alist-get 'text part))
                           (seq-filter (lambda (part)
                                         (equal (alist-get 'type part) "text"))
                                       parts)
                           " "))
         (images (delq nil (mapcar (lambda (part)
                                     (or (alist-get 'path part)
                                         (alist-get 'url (alist-get 'image_url part))))
                                   parts)))
         (mask (ob-chat-ai--param params :mask))
         (mask (and mask (format "%s" mask))))
    (when (and mask (not images))
      (ob-chat-ai--user-error ":mask needs an image to edit (:image or a link)"))
    `((prompt . ,(string-trim words))
      ,@(and images `((image . ,(vconcat images))))
      ,@(and mask `((mask . ,(if (string-match-p "\\`https?://" mask)
                                 mask
                               (expand-file-name mask))))))))

(defun ob-chat-ai-images-output (body params)
  "Return the envelope field naming where the images of PARAMS go.
That is :file, relative to the block's directory; else a file named
after the block, or a hash of BODY and PARAMS, in a folder next to
the Org file.  Unless it is a dry run, ask Babel to show the links as
Org text in a drawer, unless the block chose how to show its result."
  (unless (ob-chat-ai--yes-p params :dry-run)
    (ob-chat-ai-images--show-as-links params))
  (let ((file (ob-chat-ai--param params :file)))
    `((output . ,(expand-file-name
                  (if file
                      (format "%s" file)
                    (ob-chat-ai-images--default-file body params)))))))

(defun ob-chat-ai-images--default-file (body params)
  "Return the file for the images of BODY and PARAMS when there is no :file."
  (let* ((document (buffer-file-name (buffer-base-buffer)))
         (folder (if document
                     (expand-file-name
                      (concat (file-name-base document) "-images")
                      (file-name-directory document))
                   (expand-file-name "chat-ai-images")))
         (name (ob-chat-ai-images--block-name))
         (extension (format "%s" (or (ob-chat-ai--param params :output-format) "png"))))
    (expand-file-name
     (concat (if name
                 (replace-regexp-in-string "[^[:alnum:]_.-]" "-" name)
               (substring (sha1 (format "%s %S" body (ob-chat-ai-images--shaping params)))
                          0 12))
             "." extension)
     folder)))

(defun ob-chat-ai-images--shaping (params)
  "Return the header args of PARAMS that shape the images, for the hash."
  (mapcar (lambda (name) (ob-chat-ai--param params name))
          '(:model :size :quality :style :background :output-format :n :image)))

(defun ob-chat-ai-images--block-name ()
  "Return the #+name of the block being run, or nil."
  (save-excursion
    (when org-babel-current-src-block-location
      (goto-char org-babel-current-src-block-location))
    (let ((element (org-element-at-point)))
      (and (eq (org-element-type element) 'src-block)
           (org-element-property :name element)))))

(defun ob-chat-ai-images--show-as-links (params)
  "Have the result of PARAMS shown as Org links in a drawer, unless it chose.
A block that asks for raw, org or drawer results keeps its choice;
:results file is refused: the helper writes the files and the result
links them, and Babel would write the links into :file."
  (let ((result-params (cdr (assq :result-params params))))
    (when (member "file" result-params)
      (ob-chat-ai--user-error ":endpoint images writes and links the files itself; \
leave out :results file"))
    (unless (seq-intersection '("raw" "org" "drawer") result-params)
      ;; Babel reads the same list after this block runs.
      (nconc result-params (list "drawer")))))

;;;; The result

(defun ob-chat-ai-images-redisplay ()
  "Show the images a chat-ai images block linked, in a buffer showing images.
For `org-babel-after-execute-hook'."
  (when (and (derived-mode-p 'org-mode)
             (if (boundp 'org-link-preview-overlays)
                 org-link-preview-overlays
               (bound-and-true-p org-inline-image-overlays)))
    (let ((info (org-babel-get-src-block-info 'no-eval)))
      (when (and info (equal (car info) "chat-ai") (ob-chat-ai-images-p (nth 2 info)))
        (if (fboundp 'org-link-preview-refresh)
            (org-link-preview-refresh)
          (with-no-warnings (org-redisplay-inline-images)))))))

(add-hook 'org-babel-after-execute-hook #'ob-chat-ai-images-redisplay)

(provide 'ob-chat-ai-images)

;;; ob-chat-ai-images.el ends here
