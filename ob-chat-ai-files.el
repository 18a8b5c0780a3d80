;;; ob-chat-ai-files.el --- Images, PDFs, audio and files in a chat-ai prompt  -*- lexical-binding: t; -*-

;; Copyright (C) 2026 The ob-chat-ai authors

;; This file is not part of GNU Emacs.

;; SPDX-License-Identifier: GPL-3.0-or-later

;;; Commentary:

;; A user turn that links to a local image, PDF or audio file, or to a
;; remote image, is sent as content parts: the words around each link
;; as text parts, each link as a part of its own, in order.
;;
;;   #+begin_src chat-ai :detail low
;;   What does [[file:diagram.png]] show?
;;   #+end_src
;;
;; :image PATH... and :file PATH... add files from header args to the
;; block's last user turn; :detail low, high or auto says how closely
;; the model looks at images.
;;
;; Emacs only names the files, with absolute paths, as "local_file"
;; parts (see docs/protocol.org); the helper reads them, so that their
;; bytes never pass through Emacs and the helper's rules (kinds, size
;; limits) are the one place they are decided.  Links resolve relative
;; to the Org file, header args relative to the block's directory (its
;; :dir, else the Org file's), as Babel's own :file does.

;;; Code:

;;;; Requirements

(require 'ol)
(require 'seq)
(require 'subr-x)
(require 'ob-chat-ai-process)
(require 'ob-chat-ai-reply)

;;;; Kinds of files

(defconst ob-chat-ai-files-attachable
  '("png" "jpg" "jpeg" "gif" "webp" "pdf" "wav" "mp3")
  "Extensions of the linked files that are sent as parts of their own.")

(defconst ob-chat-ai-files-remote-images '("png" "jpg" "jpeg" "gif" "webp")
  "Extensions of the remote links that are sent as image URLs.")

(defconst ob-chat-ai-files-details '("auto" "low" "high")
  "The values of :detail.")

;;;; Content

(defun ob-chat-ai-files-content (text &optional directory detail)
  "Return the content of a user turn of TEXT: TEXT, or content parts.
When TEXT links to an attachable file or a remote image, return a
vector of parts: text parts for the words around the links, a part
for each link.  Otherwise return TEXT as it is.  Relative links
resolve in DIRECTORY (else `default-directory'); DETAIL, when
non-nil, is the images' detail."
  (let ((parts nil)
        (start 0)
        (linked nil))
    (while (string-match org-link-bracket-re text start)
      (let* ((from (match-beginning 0))
             (to (match-end 0))
             (part (ob-chat-ai-files--link-part
                    (org-link-unescape (match-string 1 text)) directory detail)))
        (when part
          (setq linked t)
          (push (substring text start from) parts)
          (push part parts)
          (setq start to))
        (unless part
          (setq parts (cons (substring text start to) parts)
                start to))))
    (if (not linked)
        text
      (push (substring text start) parts)
      (ob-chat-ai-files--parts (nreverse parts)))))

(defun ob-chat-ai-files--parts (pieces)
  "Return PIECES, strings and parts, as a vector of parts.
Adjacent strings join into one text part; blank ones are left out."
  (let ((parts nil)
        (words nil))
    (dolist (piece (append pieces '(end)))
      (if (stringp piece)
          (push piece words)
        (let ((text (string-trim (apply #'concat (nreverse words)))))
          (unless (string-empty-p text)
            (push `((type . "text") (text . ,text)) parts)))
        (setq words nil)
        (unless (eq piece 'end)
          (push piece parts))))
    (vconcat (nreverse parts))))

(defun ob-chat-ai-files--link-part (link directory detail)
  "Return the content part for LINK, a link's path, or nil to keep it as text.
A relative file resolves in DIRECTORY; DETAIL is the images' detail."
  (cond
   ((string-match "\\`https?://" link)
    (when (member (ob-chat-ai-files--extension link) ob-chat-ai-files-remote-images)
      `((type . "image_url")
        (image_url (url . ,link) ,@(and detail `((detail . ,detail)))))))
   ((let ((path (ob-chat-ai-files--link-path link)))
      (and path
           (member (ob-chat-ai-files--extension path) ob-chat-ai-files-attachable)
           (ob-chat-ai-files-part path directory detail))))))

(defun ob-chat-ai-files--link-path (link)
  "Return the file that LINK names, a file: link or a bare path, or nil."
  (let ((path (cond
               ((string-prefix-p "file:" link) (substring link 5))
               ((string-match-p "\\`\\(?:[/~]\\|\\.\\.?/\\)" link) link))))
    (and path (replace-regexp-in-string "::.*\\'" "" path))))

(defun ob-chat-ai-files--extension (name)
  "Return the extension of file or URL NAME in lower case, or nil."
  (let ((extension (file-name-extension
                    (replace-regexp-in-string "[?#].*\\'" "" name))))
    (and extension (downcase extension))))

(defun ob-chat-ai-files-part (path directory detail)
  "Return the part that asks the helper for the file PATH.
A relative PATH resolves in DIRECTORY; DETAIL is an image's detail."
  `((type . "local_file")
    (path . ,(expand-file-name path directory))
    ,@(and detail `((detail . ,detail)))))

(defun ob-chat-ai-files-detail (params)
  "Return the :detail of PARAMS, checked, or nil."
  (let ((detail (ob-chat-ai--param params :detail)))
    (when detail
      (setq detail (format "%s" detail))
      (unless (member detail ob-chat-ai-files-details)
        (ob-chat-ai--user-error ":detail must be auto, low or high, not %s" detail))
      detail)))

(defun ob-chat-ai-files-header-parts (params &optional names)
  "Return the parts that the :image and :file header args of PARAMS ask for.
NAMES, when given, are the header args to read instead.  With
:results file, :file is Babel's: where the reply goes.  Relative
paths resolve in `default-directory', which Babel sets from the
block's :dir."
  (let ((detail (ob-chat-ai-files-detail params)))
    (mapcan
     (lambda (name)
       (mapcar (lambda (path)
                 (if (string-match-p "\\`https?://" path)
                     `((type . "image_url")
                       (image_url (url . ,path)
                                  ,@(and detail `((detail . ,detail)))))
                   (ob-chat-ai-files-part path default-directory detail)))
               (ob-chat-ai-files--paths (ob-chat-ai--param params name))))
     (or names
         (if (member "file" (cdr (assq :result-params params)))
             '(:image)
           '(:image :file))))))

(defun ob-chat-ai-files--paths (value)
  "Return the paths in header arg VALUE: words, or quoted names with spaces."
  (cond
   ((null value) nil)
   ((stringp value) (split-string-and-unquote value))
   ((listp value) (mapcar (lambda (item) (format "%s" item)) value))
   (t (list (format "%s" value)))))

(defun ob-chat-ai-files-messages (messages params)
  "Return MESSAGES with the files that user messages name as parts, as PARAMS ask.
The links in each user turn become parts; the files of :image and
:file join the last user turn."
  (let* ((detail (ob-chat-ai-files-detail params))
         (directory (ob-chat-ai-files--document-directory))
         (extra (ob-chat-ai-files-header-parts params))
         (last (car (last (seq-filter
                           (lambda (message)
                             (equal (alist-get 'role message) "user"))
                           messages)))))
    (mapcar
     (lambda (message)
       (if (not (and (equal (alist-get 'role message) "user")
                     (stringp (alist-get 'content message))))
           message
         (let* ((content (ob-chat-ai-files-content
                          (alist-get 'content message) directory detail))
                (content (if (and extra (eq message last))
                             (vconcat (if (stringp content)
                                          `(((type . "text") (text . ,content)))
                                        content)
                                      extra)
                           content)))
           `((role . "user") (content . ,content)))))
     messages)))

(defun ob-chat-ai-files--document-directory ()
  "Return the directory of the current Org file, else `default-directory'."
  (let ((file (buffer-file-name (buffer-base-buffer))))
    (if file (file-name-directory file) default-directory)))

(provide 'ob-chat-ai-files)

;;; ob-chat-ai-files.el ends here
